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


def test_a_reshaped_config_chooses_its_unset_settings_again():
    from qdesk.core.quant.configs import HQQConfig, RTNConfig

    base = HQQConfig(bits=4, group_size=64)
    assert base.refit is False  # chosen for 4 bits
    three = base.reshaped(bits=3)
    assert three.bits == 3 and three.refit is True and three.group_size == 64
    assert three.reshaped(bits=4) == base
    user = HQQConfig(bits=4, refit=True)  # what the user set survives
    assert user.reshaped(bits=3).refit is True and user.reshaped(bits=8).refit is True
    assert "auto" not in base.to_json() and base.to_json()["refit"] is False
    assert RTNConfig(symmetric=False).reshaped(group_size=-1).clip_search is False


def test_a_plan_rule_at_other_bits_gets_that_width_s_choices():
    from qdesk.core.quant.configs import HQQConfig
    from qdesk.core.quant.plans import PlanRule

    rule = PlanRule("*.mlp.*", bits=3)
    assert rule.config_for(HQQConfig(bits=4)).refit is True
    assert rule.config_for(HQQConfig(bits=4, refit=False)).refit is False
