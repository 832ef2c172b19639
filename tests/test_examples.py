"""Every script in examples/ runs (with its --quick settings)."""

import importlib.util
import pathlib

import pytest

EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


@pytest.mark.one_backend  # the APIs they use are tested on every backend
@pytest.mark.tf_eager  # a smoke test of each script: graph tracing is tested elsewhere
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, capsys):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if getattr(module, "TF_ONLY", False):
        import keras

        if keras.backend.backend() != "tensorflow":
            pytest.skip("TensorFlow-only example")
    module.main(["--quick"])
    assert capsys.readouterr().out.strip()  # it reported something
