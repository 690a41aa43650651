"""The commands that serve a page (`evolution run/page --serve`) or reach a cluster (`sweep
--address`): a port in use or out of range is one line at once, before any work."""

from __future__ import annotations

import socket
import time

import pytest

from mechscope.evolution.page import HOST


@pytest.fixture
def busy_port():
    """A port something already listens on."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        yield s.getsockname()[1]


def _page(tmp_path, port) -> list:
    return ["evolution", "page", tmp_path, "--serve", "--port", port]


def _run(tmp_path, port) -> list:
    return ["evolution", "run", "--out", tmp_path / "out", "--serve", "--port", port]


@pytest.mark.parametrize("command", [_page, _run])
def test_port_in_use(command, busy_port, tmp_path, mechscope_cli, failed_cleanly) -> None:
    t0 = time.perf_counter()
    result = mechscope_cli(command(tmp_path, busy_port))
    assert time.perf_counter() - t0 < 5  # before the model loads
    failed_cleanly(result, f"--port {busy_port} cannot be used on {HOST}", "give another port")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("port", [-1, 65536, 99999])
@pytest.mark.parametrize("command", [_page, _run])
def test_port_out_of_range(command, port, tmp_path, mechscope_cli, failed_cleanly) -> None:
    result = mechscope_cli(command(tmp_path, port))
    failed_cleanly(result, "--port must be an integer in [1, 65535]")


@pytest.mark.parametrize("port", [65536, 99999])
def test_sweep_address_port_out_of_range(port, tmp_path, mechscope_cli, failed_cleanly) -> None:
    args = ["sweep", "examples/sweeps/acdc.yaml", "--backend", "ray", "--out", tmp_path]
    result = mechscope_cli([*args, "--address", f"127.0.0.1:{port}"])
    failed_cleanly(result, f"port {port} is out of range (1-65535)")


def test_serving_a_page_still_works(tmp_path) -> None:
    """The check does not hold the port: the page is served on it afterwards."""
    import urllib.request

    from mechscope.evolution.page import serve
    from mechscope.validate import port as check_port

    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    check_port("--port", port, HOST)
    server = serve("<html>ok</html>", port, block=False)
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/") as r:
            assert r.read() == b"<html>ok</html>"
    finally:
        server.shutdown()
        server.server_close()
