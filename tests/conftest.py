"""Session-wide fixtures: the tiny published files and their converted checkpoint, built once."""

import pytest
from fixtures import write_published

from clipaway_jax.convert.published import Sources, convert


@pytest.fixture(scope="session")
def published(tmp_path_factory):
    return write_published(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="session")
def tiny_checkpoint(published, tmp_path_factory):
    out = tmp_path_factory.mktemp("checkpoint") / "tiny"
    convert(Sources(**published), out, progress=lambda _: None)
    return out
