from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pytest_socket import disable_socket, enable_socket

from docflow.api.app import create_app
from docflow.api.config import get_api_settings
from docflow.context import get_context
from docflow.settings import get_settings


@pytest.fixture(autouse=True)
def _no_network():
    """Unit tests must not touch the network (pytest-socket)."""
    disable_socket(allow_unix_socket=True)
    yield
    enable_socket()


# -- the API on the local stores, with a tiny model (test_api, test_review_api) ---------------------------------


@pytest.fixture
def api_env(docflow_home: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("DOCFLOW_MODEL_DIR", str(tiny_model))
    for var in ("DOCFLOW_API_KEY", "DOCFLOW_API_MAX_UPLOAD_BYTES", "DOCFLOW_API_SYNC_MAX_PAGES"):
        monkeypatch.delenv(var, raising=False)
    _clear_caches()
    yield docflow_home
    _clear_caches()


def _clear_caches() -> None:
    get_settings.cache_clear()
    get_context.cache_clear()
    get_api_settings.cache_clear()


@pytest.fixture
def make_client(api_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """A client on a fresh app; env overrides (DOCFLOW_*) apply to that app."""
    clients: list[TestClient] = []

    def make(**env: str) -> TestClient:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _clear_caches()
        client = TestClient(create_app(), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
