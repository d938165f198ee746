import re

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workers.exceptions import RulesError
from workers.core.rules import load_rules, parse_duration, parse_rules
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
                                             "customer-answered", "resolved-notice", "auto-close",
                                             "customer-replied", "escalate-reopened", "support-silence",
                                             "email-bounced"]
    assert rules.rule("email-bounced").when.kind == "email"
    assert rules.comment_is_enough() and rules.rule("support-silence").calendar == "support"
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
    assert e.value.problems == [f"9: rules[0].do[0].email.template: no template 'nope' for locale 'en' "
                                f"(looked for emails/en/nope.html in {PROJECT_ROOT / 'templates'})"]
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


def test_a_time_zone_name_too_long_for_a_file_name_is_refused_not_a_crash():
    assert problems(GOOD + f"time_zone: Europe/{'x' * 300}\n")[0].startswith("10: time_zone: unknown time zone")


def test_closes_after_is_the_delay_of_the_rule_that_moves_a_ticket_on():
    rules = load_rules(PROJECT_ROOT / "rules.yaml")
    assert rules.closes_after("resolved") == 5 * 86400
    assert rules.closes_after("waiting_for_feedback") is None


# --------------------------------------------------------------------------- YAML as yaml.safe_load reads it


def test_the_shipped_rules_written_with_a_merge_key_load_the_same():
    shipped = (PROJECT_ROOT / "rules.yaml").read_text()
    first = "- email: {to: reporter, template: ticket_received}"
    merged = shipped.replace(first, "- email: &email_reporter {to: reporter, template: ticket_received}")
    for template in ("feedback_request", "feedback_reminder", "resolved_notice", "auto_closed"):
        merged = merged.replace(f"- email: {{to: reporter, template: {template}}}",
                                f"- email:\n          <<: *email_reporter\n          template: {template}")
    assert merged.count("<<: *email_reporter") == 4
    templates = PROJECT_ROOT / "templates"
    assert parse_rules(merged, "rules.yaml", templates) == parse_rules(shipped, "rules.yaml", templates)


def test_an_error_inside_a_merged_mapping_names_the_line_it_is_written_on():
    text = GOOD + (
        "  - name: notice\n"
        "    when: {entered: resolved}\n"
        "    do:\n"
        "      - email: &mail {to: bob, template: auto_closed}\n"      # line 13
        "  - name: notice-again\n"
        "    when: {entered: resolved}\n"
        "    do:\n"
        "      - email:\n"
        "          <<: *mail\n"
        "          template: Auto-Closed\n")                            # line 19
    assert problems(text) == [
        "13: rules[1].do[0].email.to: 'bob' is neither reporter nor assignee nor an email address",
        "13: rules[2].do[0].email.to: 'bob' is neither reporter nor assignee nor an email address",
        "19: rules[2].do[0].email.template: String should match pattern '^[a-z0-9_]+$'"]


def test_a_whole_rule_can_be_merged_and_an_alias_reused():
    text = GOOD.replace("do:\n", "do: &close\n") + (
        "  - <<: &base {when: {entered: resolved}, do: [{comment: hi}]}\n"
        "    name: again\n"
        "  - {<<: *base, name: and-again, do: *close}\n")
    rules = parse_rules(text)
    assert rules.rule("again").when.states == ("resolved",) and rules.rule("again").do[0].comment == "hi"
    assert rules.rule("and-again").do == rules.rule("auto-close").do


def test_a_complex_key_is_a_line_numbered_error():
    assert problems(GOOD + "? [a, b]\n: 1\n") == ["10: file: a key must be a name, not a list"]
    assert problems(GOOD.replace("  open: [Open]", "  ? {open: 1}\n  : [Open]")) == [
        "2: statuses: a key must be a name, not a mapping"]


@pytest.mark.parametrize("key,kind", [("1", "a number"), ("null", "null"), ("~", "null"), ("true", "true/false"),
                                      ("2026-01-02", "a date"), ("1.5", "a number")])
def test_a_key_that_is_not_a_name_says_so_on_its_line(key, kind):
    assert problems(GOOD.replace("  open: [Open]", f"  {key}: [Open]")) == [
        f"2: statuses: key {key!r} is read as {kind}, not a name: quote it if it is one"]


def test_a_merge_key_given_twice_is_a_duplicate():
    text = GOOD.replace("statuses:", "statuses:\n  <<: {}\n  <<: {}")
    assert problems(text) == ["3: statuses.<<: duplicate key"]


@pytest.mark.parametrize("text,expected", [
    ("statuses: !!python/object:os.system {}\n",
     "1: invalid YAML: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"),
    ("statuses: {open: [Open]}\nlocale: 2026-13-45\n",
     "2: invalid YAML: '2026-13-45' is not a valid timestamp: month must be in 1..12"),
    ("statuses: {open: [Open]}\nlocale: !!timestamp soon\n", "2: invalid YAML: 'soon' is not a valid timestamp"),
    ("statuses: {open: [!!binary 'a']}\n", "1: invalid YAML: failed to decode base64 data"),
    ("statuses:\n  open: [\x07]\n", "2: invalid YAML: character U+0007 is not allowed"),
    ("statuses: {open: [Open]}\nrules: " + "[" * 100 + "]" * 100 + "\n", "2: invalid YAML: nested more than 64 levels"),
    ("statuses: &s {open: *s}\n", "1: statuses.open: Input should be a valid list"),
    ("statuses: {open: [Open]}\nrules: &r [*r]\n", "2: rules[0]: Input should be a valid dictionary"),
    ("statuses: {open: [Open]}\nrules: []\n---\nrules: []\n", "3: invalid YAML: but found another document"),
    ("statuses: {open: [Open]}\nrules: [{name: a, when: {entered: open}, after: [1d], do: [{comment: x}]}]\n",
     "2: rules[0].after: a duration is like 30s, 15m, 72h or 5d"),
])
def test_yaml_safe_load_would_refuse_or_a_rules_file_cannot_mean_gives_a_line(text, expected):
    assert problems(text)[0].startswith(expected)


def test_aliases_are_not_expanded_into_a_billion_laughs():
    lines = ["statuses: {open: [Open]}", "x: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]   # 10**9 leaves
    assert problems("\n".join(lines) + "\n")[0] == "2: x: unknown key 'x'"


# --------------------------------------------------------------------------- any YAML: a RulesError or rules, never a traceback

NAMES = ["statuses", "rules", "locale", "time_zone", "projects", "name", "when", "entered", "left", "created",
         "after", "do", "email", "to", "template", "transition", "raise_priority", "add_label", "comment",
         "enabled", "open", "resolved", "reopened", "<<", "="]
keys = (st.sampled_from(NAMES) | st.text(max_size=8) | st.integers() | st.none() | st.booleans() | st.dates()
        | st.floats(allow_nan=False))
scalars = (st.sampled_from(["5d", "1d12h", "0s", "reporter", "open", "resolved", "Closed", "en", "fr_FR", "UTC",
                            "Europe/Paris", "leads@example.com", "auto_closed", "nope"])
           | st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.binary(max_size=6)
           | st.dates() | st.datetimes())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=20)


def loose(strategy):
    """Mostly what a rules file holds there, sometimes anything."""
    return st.one_of(strategy, strategy, values)


state_names = st.sampled_from(["open", "resolved", "reopened", "nowhere"])
states = loose(state_names)
actions = loose(st.one_of(
    st.fixed_dictionaries({"email": loose(st.fixed_dictionaries(
        {"to": loose(st.sampled_from(["reporter", "assignee", "x@example.com", "bob"])),
         "template": loose(st.sampled_from(["auto_closed", "escalation", "Bad"]))}))}),
    st.fixed_dictionaries({"transition": loose(st.just("Closed"))}),
    st.fixed_dictionaries({"raise_priority": loose(st.integers(0, 5))}),
    st.dictionaries(st.sampled_from(NAMES), values, max_size=2)))
rule_like = loose(st.fixed_dictionaries(
    {"name": loose(st.sampled_from(["auto-close", "a", "Bad Name"])),
     "when": loose(st.dictionaries(st.sampled_from(["entered", "left", "created"]), states, max_size=2)),
     "do": loose(st.lists(actions, max_size=3))},
    optional={"after": loose(st.sampled_from(["5d", "soon", 30])), "enabled": values}))
rules_like = st.fixed_dictionaries(
    {"statuses": loose(st.dictionaries(state_names | keys, loose(st.lists(st.text(max_size=8), max_size=3)), max_size=3)),
     "rules": loose(st.lists(rule_like, max_size=3))},
    optional={"locale": loose(st.text(max_size=8)),
              "time_zone": loose(st.text(max_size=20) | st.sampled_from(["Europe/" + "x" * 300, "../etc", "/"])),
              "projects": values, "extra": values})


@st.composite
def dumped(draw):
    """yaml.safe_dump of a random document; a part used twice becomes an anchor and its aliases."""
    document = draw(rules_like | values)
    if isinstance(document, dict) and document and draw(st.booleans()):
        shared = draw(st.dictionaries(keys, values, max_size=3))
        for key in draw(st.lists(st.sampled_from(sorted(document, key=repr)), max_size=3)):
            document[key] = shared
    return yaml.safe_dump(document, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.booleans()))


def flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()


@st.composite
def merged(draw):
    """Rules that reuse an anchored rule, trigger and email through merge keys, with random overrides."""
    mail_override, rule_override = draw(st.dictionaries(keys, values, max_size=2)), draw(values)
    return (
        "statuses: {open: [Open], resolved: [Resolved]}\n"
        "rules:\n"
        "  - &rule\n"
        "    name: first\n"
        "    when: &when {entered: resolved}\n"
        "    do:\n"
        "      - email: &mail {to: reporter, template: auto_closed}\n"
        f"  - <<: [{flow(rule_override) if isinstance(rule_override, dict) else '*rule'}, *rule]\n"
        "    name: second\n"
        "    when: {<<: *when}\n"
        f"    do: [{{email: {{<<: [*mail, {flow(mail_override)}]}}}}]\n")


TRICKY = [
    "", "~", "[]", "- 1\n- 2\n", "statuses:\n", "<<: {statuses: {open: [O]}}\n", "<<: 1\n", "? [a, b]\n: 1\n",
    "? {a: 1}\n: 1\n", "1: a\nnull: b\ntrue: c\n2026-01-01: d\n", "statuses: !!python/object:os.system {}\n",
    "statuses: !!python/name:os.system\n", "a: !!binary aGVsbG8=\n", "a: !!binary '!'\n", "a: 2026-02-30\n",
    "a: !!timestamp x\n", "a: !!int x\n", "a: !!float x\n", "a: !!set {x, y}\n", "a: !!omap [x: 1]\n",
    "a: !local x\n", "a: &x [*x]\n", "a: &x {b: *x, <<: *x}\n", "a: *nowhere\n", "a: [" * 70 + "]" * 70,
    "a: {" * 70 + "}" * 70, "--- 1\n--- 2\n", "a: b: c\n", "\t- x\n", "a: \x00\n", "a: \ufeffb\n", "=: x\n",
    "%YAML 1.1\n---\na: 1\n", "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n", "a: .nan\nb: -.inf\n",
]


def assert_only_rules_errors(text):
    """parse_rules either reads ``text`` or raises RulesError whose every problem is ``line: where: problem``."""
    try:
        parse_rules(text, "rules.yaml")
    except RulesError as e:
        breaks = len(re.findall(r"\r\n|[\r\n\x85\u2028\u2029]", text))
        for problem in e.problems:
            m = re.fullmatch(r"(\d+): (.+?): (.+)", problem, re.DOTALL)
            assert m, problem
            assert 1 <= int(m.group(1)) <= breaks + 2, (problem, text)
            assert str(e).startswith("rules.yaml:")


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_yaml_gives_rules_errors_only(text):
    assert_only_rules_errors(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(dumped(), merged(), st.sampled_from(TRICKY), st.text(max_size=60)))
@example("statuses: {open: [Open]}\nrules: &r [*r]\n")
def test_any_yaml_gives_rules_or_a_line_numbered_rules_error(text):
    assert_only_rules_errors(text)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(TRICKY[1:]), st.integers(0, 60), st.integers(0, 12))
def test_the_shipped_rules_with_a_tricky_fragment_spliced_in_give_rules_errors_only(fragment, line, indent):
    lines = (PROJECT_ROOT / "rules.yaml").read_text().splitlines(keepends=True)
    at = min(line, len(lines))
    spliced = "".join(" " * indent + f for f in fragment.splitlines(keepends=True))
    assert_only_rules_errors("".join(lines[:at]) + spliced + "".join(lines[at:]))
