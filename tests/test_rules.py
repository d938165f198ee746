import pytest

from workers.exceptions import RulesError
from workers.rules import load_rules, parse_duration, parse_rules
from workers.settings import PROJECT_ROOT

GOOD = """\
statuses:
  open: [Open]
  resolved: [Resolved, Résolu]
rules:
  - name: auto-close
    when: {entered: resolved}
    after: 5d
    do:
      - transition: Closed
"""


def problems(text):
    with pytest.raises(RulesError) as e:
        parse_rules(text, "rules.yaml")
    return e.value.problems


def test_the_shipped_rules_file_is_valid_and_has_the_three_rules():
    rules = load_rules(PROJECT_ROOT / "rules.yaml", PROJECT_ROOT / "templates")
    assert [r.name for r in rules.rules] == ["acknowledge", "feedback-request", "feedback-reminder",
                                             "resolved-notice", "auto-close", "escalate-reopened"]
    assert rules.rule("feedback-reminder").after == 3 * 86400
    assert rules.rule("auto-close").after == 5 * 86400
    assert rules.state_of("En attente de feedback") == "waiting_for_feedback"
    assert rules.state_of("résolu") == "resolved"     # case-insensitive
    assert rules.state_of("Done") is None


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("15m", 900), ("72h", 259200), ("5d", 432000),
                                          ("1d12h", 129600), ("1w", 604800), (45, 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5x", "", "d5", "0s", "5 days", -3, True])
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_a_bad_duration_names_its_line():
    assert problems(GOOD.replace("after: 5d", "after: 5x")) == [
        "7: rules[0].after: invalid duration '5x': use 30s, 15m, 72h, 5d (or a sum like 1d12h)"]


def test_an_unknown_action_names_its_line():
    assert problems(GOOD.replace("- transition: Closed", "- frobnicate: 1")) == [
        "9: rules[0].do[0].frobnicate: unknown key 'frobnicate'"]


def test_an_undefined_state_names_the_rule_line():
    assert problems(GOOD.replace("{entered: resolved}", "{entered: reopened}")) == [
        "6: rules[0].when: state 'reopened' is not defined under 'statuses'"]


def test_a_bad_recipient_is_refused():
    text = GOOD.replace("- transition: Closed", "- email: {to: bob, template: auto_closed}")
    assert problems(text) == ["9: rules[0].do[0].email.to: 'bob' is neither reporter nor assignee nor an email address"]


def test_a_status_in_two_states_is_refused():
    assert problems(GOOD.replace("open: [Open]", "open: [Open, Resolved]"))[0].startswith(
        "1: statuses: status 'Resolved' is mapped to both open and resolved")


def test_duplicate_keys_and_names_are_refused():
    assert problems(GOOD + "statuses: {}\n") == ["10: statuses: duplicate key"]
    twice = GOOD + "  - name: auto-close\n    when: {entered: open}\n    do: [{comment: hi}]\n"
    assert problems(twice) == ["10: rules[1].name: rule name 'auto-close' is used twice"]


def test_broken_yaml_names_its_line():
    assert problems("statuses:\n  open: [Open\nrules: []\n")[0].startswith("3: invalid YAML")


def test_a_missing_template_is_refused(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD.replace("- transition: Closed", "- email: {to: reporter, template: nope}"))
    with pytest.raises(RulesError) as e:
        load_rules(path, PROJECT_ROOT / "templates")
    assert e.value.problems == [f"9: rules[0].do[0].email.template: no template 'nope' for locale 'en' in "
                                f"{PROJECT_ROOT / 'templates'}"]
    assert str(e.value).startswith(f"{path}:9: ")


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RulesError) as e:
        load_rules(tmp_path / "absent.yaml")
    assert "cannot read" in str(e.value)


def test_created_is_a_trigger_of_its_own():
    rules = parse_rules(GOOD + "  - name: ack\n    when: {created: true}\n    do: [{comment: thanks}]\n")
    assert rules.rule("ack").when.kind == "created"
    assert problems(GOOD + "  - name: ack\n    when: {created: false}\n    do: [{comment: x}]\n")[0].startswith(
        "11: rules[1].when.created: ")


def test_unknown_locales_and_time_zones_are_refused():
    assert problems(GOOD + "locale: klingon\n") == [
        "10: locale: unknown locale 'klingon' (use en, fr, fr_FR, ...)"]
    assert problems(GOOD + "projects:\n  SUP: {time_zone: Mars/Olympus}\n") == [
        "11: projects.SUP.time_zone: unknown time zone 'Mars/Olympus' (use an IANA name like Europe/Paris)"]


def test_closes_after_is_the_delay_of_the_rule_that_moves_a_ticket_on():
    rules = load_rules(PROJECT_ROOT / "rules.yaml")
    assert rules.closes_after("resolved") == 5 * 86400
    assert rules.closes_after("waiting_for_feedback") is None
