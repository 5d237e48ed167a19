"""
test_spec.py — docker-compose.yml (and the tests' override test.yml) are
valid Compose Specification documents, the format the compose v2 plugin
(`docker compose`) reads, not only files docker-compose 1.29 accepts.

The plugin cannot be installed here (it is Go, and not in Debian bookworm),
and no Debian package ships compose-go's schema; Debian's docker-compose
1.29 ships the Compose Specification's JSON schema itself
(compose/config/compose_spec.json), which is what this validates against
with Debian's python3-jsonschema. Before validating, the file is read the
way compose reads it: YAML merge keys (<<:) resolved and ${VAR:-default}
interpolated with the defaults (an empty environment). The v2 differences
a schema cannot show are in README.md, "Containers" (compose v1 and v2).

Needs no Docker daemon and builds nothing: it does not use the stack fixture.
"""

import json
import os
import re

import jsonschema
import pytest
import yaml

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCHEMA = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json"
INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(v):
    """${X:-d} and ${X-d} give d, ${X} and ${X:?e} an empty string: compose
    with none of the variables set. $$ is a literal $."""
    if isinstance(v, dict):
        return {k: interpolate(x) for k, x in v.items()}
    if isinstance(v, list):
        return [interpolate(x) for x in v]
    if isinstance(v, str):
        out = INTERP.sub(lambda m: m.group(3) if m.group(2) in (":-", "-") else "", v)
        return out.replace("$$", "$")
    return v


def load(name):
    with open(os.path.join(TOP, name)) as f:
        return interpolate(yaml.safe_load(f))


@pytest.fixture(scope="module")
def validator():
    if not os.path.exists(SCHEMA):
        pytest.fail("%s missing: tools/docker/test-compose.sh installs docker-compose" % SCHEMA)
    with open(SCHEMA) as f:
        schema = json.load(f)
    # The schema declares draft 2019-09 under a URI jsonschema does not
    # recognise ("http://json-schema.org/draft/2019-09/schema#"): name it.
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


@pytest.mark.parametrize("name", ["docker-compose.yml", "tests/compose/test.yml"])
def test_valid_compose_spec(validator, name):
    doc = load(name)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join("%s: %s" % ("/".join(map(str, e.absolute_path)) or "(top)", e.message)
                                 for e in errors)


def test_schema_rejects_what_v2_rejects(validator):
    """The check has teeth: a key the specification does not know, and a
    long-form depends_on without its condition, are errors."""
    doc = load("docker-compose.yml")
    doc["services"]["busd"]["restart_policy"] = "always"
    assert list(validator.iter_errors(doc))
    doc = load("docker-compose.yml")
    doc["services"]["smtpd"]["depends_on"]["storaged"] = {"condition": "when_ready"}
    assert list(validator.iter_errors(doc))


def test_what_v2_needs_beyond_the_schema():
    """What compose v2 treats differently from 1.29, checked on the file:
    no container_name (v2 names containers project-service-N, and --scale
    needs generated names), every network_mode: service:X names a service
    of the file, every depends_on target exists, healthchecks use the
    exec form (CMD), and no top-level `name:` (1.29 rejects it)."""
    doc = load("docker-compose.yml")
    services = doc["services"]
    assert "name" not in doc
    for svc, conf in services.items():
        assert "container_name" not in conf, svc
        nm = conf.get("network_mode", "")
        if nm.startswith("service:"):
            assert nm[len("service:"):] in services, (svc, nm)
        for dep in conf.get("depends_on", {}):
            assert dep in services, (svc, dep)
        hc = conf.get("healthcheck")
        if hc is not None:
            assert hc["test"][0] == "CMD", (svc, hc["test"])
