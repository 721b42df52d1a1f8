import mpyrun


def test_unix_port_runs_and_imports_package_lazily():
    out = mpyrun.run_json(
        "import sys, json, iothub; print(json.dumps([sys.implementation.name, 'iothub.client' in sys.modules, iothub.__version__]))"
    )
    assert out[0] == "micropython"
    assert out[1] is False  # nothing loaded until used
    assert out[2] == "0.1.0"
