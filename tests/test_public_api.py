"""The public API: every name jaxgan exports is documented with an example and typed."""

import inspect

import pytest

import jaxgan


@pytest.mark.parametrize("name", jaxgan.__all__)
def test_every_export_has_a_docstring_with_an_example_and_type_hints(name):
    obj = getattr(jaxgan, name)
    if not callable(obj):  # a table such as LOSSES: its values are documented
        return
    doc = inspect.getdoc(obj) or ""
    assert "Example" in doc, f"{name}'s docstring has no example"
    if inspect.isfunction(obj):
        signature = inspect.signature(obj)
        untyped = [p for p, v in signature.parameters.items()
                   if v.annotation is inspect.Parameter.empty and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        assert not untyped, f"{name}: parameters without type hints: {untyped}"
        assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return type"


def test_names_are_imported_lazily_and_unknown_ones_raise():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        jaxgan.nonexistent  # noqa: B018
