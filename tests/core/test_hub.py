"""Hub downloads: progress reaches the caller; no network is one clear error."""

import pytest

from qdesk.core.errors import BadInput
from qdesk.core.models.hub import _progress_class, download


def test_byte_progress_is_forwarded():
    seen = []
    bar = _progress_class(lambda *a: seen.append(a))(total=1000, unit="B")
    bar.update(300)
    bar.update(700)
    bar.close()
    assert seen == [("download", 300, 1000), ("download", 1000, 1000)]


def test_no_network_is_a_clear_error():
    with pytest.raises(BadInput, match=r"^org/model@v1: cannot download it \(no network"):
        download("org/model", "v1")
