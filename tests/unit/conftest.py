import pytest
from pytest_socket import disable_socket, enable_socket


@pytest.fixture(autouse=True)
def _no_network():
    """Unit tests must not touch the network (pytest-socket)."""
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()
