"""The action catalog: the shipped file, the rule vocabulary, and errors that name file and key."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.nba.catalog import catalog_from_data, load_catalog, load_catalog_file
from pipelines.sources.simulator.actions import ACTIONS as SIMULATOR_ACTIONS

CREDIT_SUITABILITY = [
    {"name": "credit_stress:failed_payments", "max_feature": {"column": "failed_payments_7d", "value": 1}},
    {"max_feature": {"column": "card_utilisation", "value": 0.9, "if_missing": "pass"}},
    {"min_feature": {"column": "current_account_balance", "value": 0}},
]
SMALL: dict[str, Any] = {
    "actions": {
        "offer_savings": {
            "kind": "offer",
            "product": "savings",
            "value": 80,
            "channels": ["email", "app"],
            "eligibility": [{"not_holding": "savings"}],
            "default_rank": 1,
        },
        "offer_credit_card": {
            "kind": "offer",
            "product": "credit_card",
            "value": 180,
            "channels": ["email"],
            "suitability": CREDIT_SUITABILITY,
            "excludes": ["offer_savings"],
            "default_rank": 2,
        },
        "no_action": {"kind": "none", "value": 0, "default_rank": 99},
    }
}


def _with(path: str, value: Any) -> dict[str, Any]:
    """SMALL with the value at a dotted path replaced (a missing last key is added)."""
    data = copy.deepcopy(SMALL)
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return data


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "actions.yml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _context(**overrides: Any) -> dict[str, Any]:
    context = {
        "holds_savings": False,
        "holds_credit_card": False,
        "current_account_balance": 500.0,
        "card_utilisation": 0.2,
        "failed_payments_7d": 0,
    }
    context.update(overrides)
    return context


def test_shipped_catalog_has_the_simulator_action_ids_values_and_products() -> None:
    catalog = load_catalog(load_config("local"))
    assert set(catalog.ids) == set(SIMULATOR_ACTIONS)
    for action_id, sim in SIMULATOR_ACTIONS.items():
        assert catalog[action_id].value == sim.value, action_id
        assert catalog[action_id].product == sim.product, action_id
        assert catalog[action_id].contact == sim.contact, action_id


def test_shipped_credit_offers_are_not_suitable_for_credit_stressed_customers() -> None:
    catalog = load_catalog(load_config("local"))
    credit = [a for a, sim in SIMULATOR_ACTIONS.items() if sim.credit]
    assert credit
    for action_id in credit:
        columns = {c for rule in catalog[action_id].suitability for c in rule.columns()}
        assert {"failed_payments_7d", "card_utilisation", "current_account_balance"} <= columns, action_id


def test_excludes_are_symmetric_after_load() -> None:
    catalog = catalog_from_data(SMALL)
    assert catalog["offer_savings"].excludes == ("offer_credit_card",)
    assert catalog.excluded("offer_savings", "offer_credit_card")
    assert catalog.excluded("offer_credit_card", "offer_savings")
    assert not catalog.excluded("offer_savings", "no_action")


def test_actions_are_ordered_by_default_rank_and_no_action_is_not_a_contact() -> None:
    catalog = catalog_from_data(_with("actions.offer_savings.default_rank", 5))
    assert catalog.ids == ("offer_credit_card", "offer_savings", "no_action")
    assert [a.action_id for a in catalog.contacting] == ["offer_credit_card", "offer_savings"]
    assert catalog.channels == ("email", "app")


def test_rules_have_stable_default_names_or_their_own() -> None:
    action = catalog_from_data(SMALL)["offer_credit_card"]
    assert [r.label for r in action.suitability] == [
        "credit_stress:failed_payments",
        "max_feature:card_utilisation",
        "min_feature:current_account_balance",
    ]
    assert catalog_from_data(SMALL)["offer_savings"].eligibility[0].label == "not_holding:savings"


def test_max_feature_excludes_its_value_and_min_feature_includes_it() -> None:
    action = catalog_from_data(SMALL)["offer_credit_card"]
    at_limit, over_zero, balance = action.suitability
    assert not at_limit.evaluate(_context(failed_payments_7d=1), action).passed
    assert at_limit.evaluate(_context(failed_payments_7d=0), action).passed
    assert not over_zero.evaluate(_context(card_utilisation=0.9), action).passed
    assert over_zero.evaluate(_context(card_utilisation=0.89), action).passed
    assert balance.evaluate(_context(current_account_balance=0.0), action).passed
    verdict = balance.evaluate(_context(current_account_balance=-0.01), action)
    assert not verdict.passed and "current_account_balance" in verdict.detail


def test_a_rule_on_a_missing_value_fails_unless_it_says_pass() -> None:
    action = catalog_from_data(SMALL)["offer_credit_card"]
    _, utilisation, balance = action.suitability
    assert utilisation.evaluate(_context(card_utilisation=None), action).passed  # if_missing: pass
    verdict = balance.evaluate(_context(current_account_balance=float("nan")), action)
    assert not verdict.passed and "missing" in verdict.detail


def test_holding_rules_fail_when_holdings_are_unknown() -> None:
    action = catalog_from_data(SMALL)["offer_savings"]
    rule = action.eligibility[0]
    assert rule.evaluate(_context(holds_savings=False), action).passed
    assert not rule.evaluate(_context(holds_savings=True), action).passed
    assert not rule.evaluate(_context(holds_savings=None), action).passed


def test_validity_window_includes_both_ends() -> None:
    data = _with("actions.offer_savings.valid_from", "2025-03-01")
    data["actions"]["offer_savings"]["valid_to"] = "2025-03-31"
    action = catalog_from_data(data)["offer_savings"]
    assert action.validity(date(2025, 3, 1)).passed and action.validity(date(2025, 3, 31)).passed
    assert not action.validity(date(2025, 2, 28)).passed
    assert not action.validity(date(2025, 4, 1)).passed


def test_wrong_type_names_file_key_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.value", "lots"))
    with pytest.raises(ConfigError) as info:
        load_catalog_file(path)
    assert str(info.value).endswith("actions.yml: actions.offer_savings.value: expected a number, got 'lots'")


def test_unknown_channel_names_the_list_item(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.channels", ["email", "fax"]))
    with pytest.raises(
        ConfigError, match=r"actions\.yml: actions\.offer_savings\.channels\.1: expected one of .*'fax'"
    ):
        load_catalog_file(path)


def test_unknown_product_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.product", "yacht"))
    with pytest.raises(ConfigError, match=r"actions\.offer_savings\.product: expected one of .*'yacht'"):
        load_catalog_file(path)


def test_unknown_exclude_id_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.excludes", ["offer_yacht"]))
    with pytest.raises(
        ConfigError,
        match=r"actions\.yml: actions\.offer_savings\.excludes\.0: unknown action id 'offer_yacht'",
    ):
        load_catalog_file(path)


def test_unknown_rule_kind_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.eligibility", [{"lives_in": "london"}]))
    with pytest.raises(
        ConfigError, match=r"actions\.offer_savings\.eligibility\.0: unknown rule kind 'lives_in'"
    ):
        load_catalog_file(path)


def test_a_rule_on_age_is_rejected_as_protected(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.eligibility", [{"age_between": [18, 30]}]))
    with pytest.raises(ConfigError, match=r"eligibility\.0: age_between: age is a protected attribute"):
        load_catalog_file(path)


def test_a_rule_column_outside_the_allowed_features_is_named(tmp_path: Path) -> None:
    rule = {"max_feature": {"column": "age_band", "value": 3}}
    path = _write(tmp_path, _with("actions.offer_savings.suitability", [rule]))
    with pytest.raises(
        ConfigError,
        match=r"actions\.offer_savings\.suitability\.0\.max_feature\.column: expected one of .*'age_band'",
    ):
        load_catalog_file(path)


def test_a_bad_product_in_a_shorthand_rule_names_the_rule(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.eligibility", [{"not_holding": "yacht"}]))
    with pytest.raises(
        ConfigError, match=r"actions\.offer_savings\.eligibility\.0\.not_holding: expected one of"
    ):
        load_catalog_file(path)


def test_unknown_key_in_an_action_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_savings.colour", "blue"))
    with pytest.raises(ConfigError, match=r"actions\.offer_savings\.colour: unknown key"):
        load_catalog_file(path)


def test_duplicate_action_id_is_named_with_its_lines(tmp_path: Path) -> None:
    text = yaml.safe_dump(SMALL, sort_keys=False)
    text += "  offer_savings:\n    kind: offer\n    value: 1\n    default_rank: 7\n"
    path = _write(tmp_path, text)
    with pytest.raises(
        ConfigError, match=r"actions\.yml: actions\.offer_savings: duplicate action id \(lines \d+ and \d+\)"
    ):
        load_catalog_file(path)


def test_no_action_is_required(tmp_path: Path) -> None:
    data = copy.deepcopy(SMALL)
    del data["actions"]["no_action"]
    with pytest.raises(ConfigError, match=r"actions\.yml: actions\.no_action: required"):
        load_catalog_file(_write(tmp_path, data))


def test_valid_to_before_valid_from_is_named(tmp_path: Path) -> None:
    data = _with("actions.offer_savings.valid_from", "2025-05-01")
    data["actions"]["offer_savings"]["valid_to"] = "2025-04-30"
    with pytest.raises(
        ConfigError, match=r"actions\.offer_savings\.valid_to: 2025-04-30 is before valid_from 2025-05-01"
    ):
        load_catalog_file(_write(tmp_path, data))


def test_two_actions_with_one_default_rank_are_named(tmp_path: Path) -> None:
    path = _write(tmp_path, _with("actions.offer_credit_card.default_rank", 1))
    with pytest.raises(
        ConfigError, match=r"actions\.offer_credit_card\.default_rank: 1 is also the rank of offer_savings"
    ):
        load_catalog_file(path)


def test_missing_catalog_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yml: configuration file not found"):
        load_catalog_file(tmp_path / "nowhere.yml")


def test_catalog_path_is_relative_to_the_conf_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    (conf / "targets").mkdir(parents=True)
    (conf / "base.yml").write_text("decisioning:\n  catalog: bank_actions.yml\n")
    (conf / "targets" / "local.yml").write_text("")
    (conf / "bank_actions.yml").write_text(yaml.safe_dump(SMALL))
    monkeypatch.setenv("JOURNEYLAKE_CONF_DIR", str(conf))
    assert load_catalog(load_config("local")).ids == ("offer_savings", "offer_credit_card", "no_action")


def test_a_bad_decisioning_setting_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"decisioning\.contact_policy\.channel_caps\.fax: expected one of"):
        load_config(
            "local",
            overrides={
                "decisioning.contact_policy.channel_caps": {"fax": {"max_contacts": 1, "period_days": 7}}
            },
        )
    with pytest.raises(ConfigError, match=r"decisioning\.exploration\.control_share"):
        load_config("local", overrides={"decisioning.exploration.control_share": 1.5})


def test_shipped_decisioning_settings_are_sensible() -> None:
    policy = load_config("local").decisioning
    assert 0 < policy.exploration.control_share < 0.5
    assert policy.arbitration.max_actions_per_decision == 1
    assert policy.context_weight("application_abandoned") > policy.context_weight("complaint")
    assert policy.context_weight("not_configured") == 1.0
    assert set(policy.contact_policy.channel_caps) == {
        "email",
        "sms",
        "push",
        "phone",
        "web",
        "app",
        "branch",
    }


def test_an_intent_rule_passes_only_when_a_trigger_carries_one_of_its_intents() -> None:
    data = _with(
        "actions.card_security_callback",
        {
            "kind": "service",
            "value": 2000,
            "channels": ["phone"],
            "eligibility": [{"intent": ["compromised_card", "lost_or_stolen_card"]}],
            "default_rank": 3,
        },
    )
    action = catalog_from_data(data)["card_security_callback"]
    rule = action.eligibility[0]
    assert rule.label == "intent:compromised_card|lost_or_stolen_card"
    said = rule.evaluate(_context(trigger_intents=["card_arrival", "compromised_card"]), action)
    assert said.passed and "the customer said compromised_card" in said.detail
    other = rule.evaluate(_context(trigger_intents=["card_arrival"]), action)
    assert not other.passed and "heard card_arrival" in other.detail
    assert not rule.evaluate(_context(), action).passed  # no trigger said anything


def test_an_intent_that_is_not_one_of_the_models_is_refused_naming_it(tmp_path: Path) -> None:
    data = _with(
        "actions.offer_savings.eligibility", [{"intent": ["stolen_card_typo"]}, {"not_holding": "savings"}]
    )
    with pytest.raises(ConfigError, match="unknown intent 'stolen_card_typo'") as caught:
        load_catalog_file(_write(tmp_path, data))
    assert "actions.yml" in str(caught.value) and "offer_savings" in str(caught.value)
