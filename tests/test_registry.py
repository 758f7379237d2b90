import pytest

import threestudio
from threestudio.utils.errors import UserError


def test_register_and_find():
    @threestudio.register("test-registry-a")
    class A:
        pass

    assert threestudio.find("test-registry-a") is A


def test_duplicate_name_names_both_classes():
    @threestudio.register("test-registry-dup")
    class First:
        pass

    with pytest.raises(ValueError) as e:

        @threestudio.register("test-registry-dup")
        class Second:
            pass

    assert "First" in str(e.value) and "Second" in str(e.value)


def test_unknown_name_lists_closest():
    @threestudio.register("test-registry-geometry")
    class G:
        pass

    with pytest.raises(UserError) as e:
        threestudio.find("test-registry-geometri")
    assert "test-registry-geometry" in str(e.value)


def test_mixin_class():
    @threestudio.register("test-registry-main")
    class Main:
        def who(self):
            return "main"

        def base_only(self):
            return "base"

    @threestudio.register("test-registry-mixin")
    class Mixin:
        def who(self):
            return "mixin+" + super().who()

    cls = threestudio.find("test-registry-main:test-registry-mixin")
    obj = cls()
    assert isinstance(obj, Main) and isinstance(obj, Mixin)
    assert obj.who() == "mixin+main" and obj.base_only() == "base"


def test_builtins_registered_on_import():
    assert "random-camera-datamodule" in threestudio.__modules__
    assert "dummy-exporter" in threestudio.__modules__


def test_unknown_name_names_extensions_that_failed_to_import(monkeypatch):
    with pytest.raises(UserError) as e:
        threestudio.find("test-registry-nowhere")
    assert "must be importable" in str(e.value)
    monkeypatch.setitem(threestudio.__failed_extensions__, "my_ext", "ImportError: no cv3")
    with pytest.raises(UserError) as e:
        threestudio.find("test-registry-nowhere")
    assert str(e.value).endswith(
        "; custom extension 'my_ext' (ImportError: no cv3) failed to import, which may be why"
    )
    with pytest.raises(UserError, match="an empty module name"):
        threestudio.find("")
