from __future__ import annotations

import pytest

from qdesk.core.errors import BadInput
from qdesk.core.quant.configs import AWQConfig, GPTQConfig, HQQConfig, RTNConfig, make_config
from qdesk.core.quant.methods import METHODS, method_for


@pytest.mark.parametrize("kwargs", [
    {"bits": 5}, {"bits": 16}, {"group_size": 0}, {"group_size": 60}, {"group_size": -2},
])
def test_bad_common_options_are_refused(kwargs):
    for cls in (RTNConfig, GPTQConfig, AWQConfig):
        with pytest.raises(BadInput):
            cls(**kwargs)


def test_method_options_are_checked():
    with pytest.raises(BadInput, match="damp"):
        GPTQConfig(damp=2.0)
    with pytest.raises(BadInput, match="asymmetric"):
        HQQConfig(symmetric=True)
    with pytest.raises(BadInput, match="grid"):
        AWQConfig(grid=1)


def test_make_config_by_name():
    assert make_config("gptq", bits=3).bits == 3
    with pytest.raises(BadInput, match="unknown method"):
        make_config("squeeze")
    with pytest.raises(BadInput, match="no option"):
        make_config("rtn", damp=0.1)


def test_configs_are_frozen_and_registered():
    c = RTNConfig()
    with pytest.raises(AttributeError):
        c.bits = 8  # type: ignore[misc]
    for cls in (RTNConfig, GPTQConfig, AWQConfig, HQQConfig):
        assert cls in METHODS
        assert method_for(cls(symmetric=cls is not HQQConfig)) is METHODS[cls]
