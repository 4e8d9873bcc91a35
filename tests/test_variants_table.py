"""The variant registry: registration, lookup errors, lazy loading of the built-in variants."""

from __future__ import annotations

import pytest

from dlrmlab import backend
from dlrmlab.bench import registry
from dlrmlab.bench.registry import Prepared
from dlrmlab.errors import DlrmlabError


def _prepare(case, **params):
    return Prepared(run=lambda i: None, result=lambda i: [], params={"fixed": 1})


def _other(case, **params):
    return Prepared(run=lambda i: None, result=lambda i: [])


@pytest.fixture
def temp_variant():
    names = []

    def reg(name, prepare=_prepare, **kw):
        names.append(name)
        return registry.register_variant(name, prepare, "test only", **kw)

    yield reg
    for n in names:
        registry.unregister_variant(n)


def test_unknown_variant_lists_valid_names():
    with pytest.raises(DlrmlabError, match="unknown variant 'nope'; valid: ") as e:
        registry.get_variant("nope")
    assert all(n in str(e.value) for n in registry.variant_names())
    with pytest.raises(DlrmlabError, match="unknown variant"):
        registry.prepare_variant("nope", None)


def test_register_and_prepare(temp_variant):
    spec = temp_variant("_t_reg")
    assert spec.name == "_t_reg" and "_t_reg" in registry.variant_names()
    assert registry.get_variant("_t_reg") is spec
    p = registry.prepare_variant("_t_reg", None, extra=2)
    assert p.params == {"extra": 2, "fixed": 1}  # given params, then the variant's own
    temp_variant("_t_reg")  # same function again (a reload): fine
    with pytest.raises(DlrmlabError, match="already registered"):
        temp_variant("_t_reg", _other)


@pytest.mark.parametrize("name", ["", " x", "a,b", "a b"])
def test_bad_names(name):
    with pytest.raises(DlrmlabError):
        registry.register_variant(name, _prepare, "bad")


def test_prepare_must_return_prepared(temp_variant):
    temp_variant("_t_bad", lambda case: 42)
    with pytest.raises(DlrmlabError, match="not Prepared"):
        registry.prepare_variant("_t_bad", None)


@pytest.mark.skipif(not backend.SIMULATOR, reason="simulator-only refusal")
def test_gpu_only_refused_in_simulator(temp_variant):
    temp_variant("_t_gpu", gpu_only=True)
    assert "_t_gpu" in registry.variant_names()
    assert "_t_gpu" not in registry.variant_names(available_only=True)
    with pytest.raises(DlrmlabError, match="needs a CUDA GPU"):
        registry.prepare_variant("_t_gpu", None)


def test_missing_variants_module_is_ignored_but_broken_imports_are_not(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(registry, "_BUILTIN_MODULES", ("dlrmlab._no_such_variants_module",))
    registry.load_builtin_variants()  # missing: ignored
    (tmp_path / "_dlrmlab_broken_variants.py").write_text("import _this_module_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(registry, "_BUILTIN_MODULES", ("_dlrmlab_broken_variants",))
    with pytest.raises(ModuleNotFoundError, match="_this_module_does_not_exist"):
        registry.load_builtin_variants()
    assert registry._LOADED is False  # retried next time, not silently half-loaded
