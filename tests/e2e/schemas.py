"""
schemas.py — validate bus envelopes against proto/schemas/ in tests.

    import schemas
    schemas.validate({"type": "echo.payload.echo", "v": 1, "id": "r1"})

load_schemas(dir) reads every schema of a directory (default: the repo's
proto/schemas) and makes it the set validate() uses; validate() loads the
default set on first use. validate() picks the schema by envelope["type"]:
the file of that exact name, or for a per-service type "<svc>.control.ping"
the wildcard file "control.ping.json" (title "*.control.ping").

Raises UnknownType for a type without a schema and InvalidMessage (with
every violation in its text) for an envelope the schema rejects; both are
MessageError, a ValueError.

jsonschema 4.10 (Debian bookworm): refs such as "envelope.json#/$defs/request"
resolve through a RefResolver whose store holds every schema by its $id.
"""

import json
import os
import re

import jsonschema
from jsonschema import Draft202012Validator, RefResolver

DEFAULT_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "schemas"))


class MessageError(ValueError):
    """An envelope that no schema accepts."""


class UnknownType(MessageError):
    """envelope["type"] names no schema."""


class InvalidMessage(MessageError):
    """The schema of envelope["type"] rejects the envelope."""


def _ecma_pattern(validator, pattern, instance, schema):
    """
    "pattern" as JSON Schema means it (ECMA-262): "$" is the end of the
    string. Python's re.search lets "$" match before a final newline, so
    "id\\n" would pass "^[!-~]+$"; the C side would (rightly) reject it.
    """
    if not validator.is_type(instance, "string"):
        return
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    if not re.search(pattern, instance):
        yield jsonschema.ValidationError(
            "%r does not match %r" % (instance, schema["pattern"]))


Validator = jsonschema.validators.extend(Draft202012Validator,
                                         {"pattern": _ecma_pattern})


class SchemaSet:
    """The schemas of one directory, by title, sharing one $id store."""

    def __init__(self, schema_dir):
        self.dir = schema_dir
        self.by_title = {}
        self.store = {}
        for fname in sorted(os.listdir(schema_dir)):
            if not fname.endswith(".json"):
                continue
            with open(os.path.join(schema_dir, fname), encoding="utf-8") as f:
                schema = json.load(f)
            self.store[schema["$id"]] = schema
            if fname != "envelope.json":
                self.by_title[schema["title"]] = schema
        self._validators = {}

    def schema_for(self, mtype):
        """The schema for a wire type name, or raises UnknownType."""
        if not isinstance(mtype, str):
            raise UnknownType("envelope has no string \"type\": %r" % (mtype,))
        if mtype in self.by_title:
            return self.by_title[mtype]
        # "<service>.control.ping" -> "*.control.ping"; the schema's type
        # pattern then checks the service part.
        _, dot, rest = mtype.partition(".")
        if dot and "*." + rest in self.by_title:
            return self.by_title["*." + rest]
        raise UnknownType("no schema for message type %r in %s" % (mtype, self.dir))

    def validator(self, schema):
        """A validator for one message schema (cached)."""
        v = self._validators.get(schema["$id"])
        if v is None:
            resolver = RefResolver.from_schema(schema, store=self.store)
            v = Validator(schema, resolver=resolver)
            self._validators[schema["$id"]] = v
        return v

    def validate(self, envelope):
        """Returns the schema's title if envelope is valid, else raises."""
        if not isinstance(envelope, dict):
            raise InvalidMessage("envelope is not a JSON object: %r" % (envelope,))
        schema = self.schema_for(envelope.get("type"))
        v = self.validator(schema)
        errors = list(v.iter_errors(envelope))
        if errors and "oneOf" in schema:
            # A request schema is oneOf request/reply: "is not valid under
            # any of the given schemas" says little, so report against the
            # branch the envelope means to be (a reply has a status).
            branch = "reply" if "status" in envelope else "request"
            errors = list(v.evolve(schema=schema["$defs"][branch])
                          .iter_errors(envelope)) or errors
        # jsonschema 4.10 counts every key of a failing part (the envelope,
        # a field with a bad value) as unevaluated too: when there is a root
        # cause, report only that.
        causes = [e for e in errors if e.validator != "unevaluatedProperties"]
        errors = causes or errors
        if errors:
            raise InvalidMessage("%s: invalid %s envelope:\n  %s" % (
                schema["title"], envelope.get("type"),
                "\n  ".join(_describe(e) for e in errors)))
        return schema["title"]


def _describe(error, depth=0):
    """One violation with its path, and for oneOf/allOf those underneath."""
    path = "/".join(str(p) for p in error.absolute_path) or "(top)"
    lines = ["%s%s: %s" % ("  " * depth, path, error.message)]
    for sub in sorted(error.context or (), key=lambda e: list(e.schema_path)):
        lines.append(_describe(sub, depth + 1))
    return "\n  ".join(lines)


_current = None


def load_schemas(schema_dir=None):
    """Loads a schema directory and makes it the one validate() uses."""
    global _current
    _current = SchemaSet(schema_dir or DEFAULT_DIR)
    return _current


def validate(envelope):
    """Validates one envelope (dict); returns its schema title or raises."""
    if _current is None:
        load_schemas()
    return _current.validate(envelope)
