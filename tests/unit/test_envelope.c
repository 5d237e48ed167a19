/*
 * test_envelope.c — cmocka unit tests for proto/envelope.c: the envelope
 * header every message shares (type, v, id, status, idem, chunk), the
 * message-type table lookups generated from proto/schemas/ (msgtypes.h),
 * and the identity checks (who may call, publish or register what).
 *
 * Each test gets a fixture owning one envelope_t, cleared in teardown, so a
 * failing assertion does not leak the parsed JSON.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "envelope.h"
#include "util.h"

struct fx {
	envelope_t env;
	const char *code;
	char err[256];
};

static int fx_setup(void **state)
{
	*state = xcalloc(1, sizeof(struct fx));
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	envelope_clear(&fx->env);
	free(fx);
	return 0;
}

/* Parses the string s as an envelope of kind (clearing the previous one). */
static int parse(struct fx *fx, enum env_kind kind, const char *s)
{
	envelope_clear(&fx->env);
	fx->code = NULL;
	fx->err[0] = '\0';
	return envelope_parse(&fx->env, s, strlen(s), kind, &fx->code, fx->err, sizeof fx->err);
}

static void expect_ok(struct fx *fx, enum env_kind kind, const char *s)
{
	if (parse(fx, kind, s) != 0)
		fail_msg("%s: %s (%s)", s, fx->code, fx->err);
}

/* Expects a failure with code and a reason containing want. */
static void expect_fail(struct fx *fx, enum env_kind kind, const char *s, const char *code,
			const char *want)
{
	if (parse(fx, kind, s) != -1)
		fail_msg("accepted: %s", s);
	assert_non_null(fx->code);
	assert_string_equal(fx->code, code);
	if (strstr(fx->err, want) == NULL)
		fail_msg("%s: reason \"%s\" lacks \"%s\"", s, fx->err, want);
}

#define REQ(type) "{\"type\":\"" type "\",\"v\":1,\"id\":\"a1\""

/* ---- envelope_parse: the header ------------------------------------------------ */

static void test_valid_request(void **state)
{
	struct fx *fx = *state;

	expect_ok(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a1\"}");
	assert_non_null(fx->env.root);
	assert_ptr_equal(fx->env.mt, &msgtypes[MSG_ECHO_PAYLOAD_ECHO]);
	assert_string_equal(fx->env.type, "echo.payload.echo");
	assert_string_equal(fx->env.id, "a1");
	assert_null(fx->env.status);
	assert_null(fx->env.idem);
	assert_false(fx->env.has_chunk);
	assert_null(fx->env.stream);

	/* Key order and the message's own fields do not matter here. */
	expect_ok(fx, ENV_REQUEST, "{\"id\":\"x-1\",\"text\":\"hi\",\"v\":1,\"type\":\"echo.payload.echo\"}");
	assert_string_equal(fx->env.id, "x-1");

	/* Per-service control types resolve to the "*" entry. */
	expect_ok(fx, ENV_REQUEST, REQ("smtpd.control.ping") "}");
	assert_ptr_equal(fx->env.mt, &msgtypes[MSG_CONTROL_PING]);
	assert_string_equal(fx->env.type, "smtpd.control.ping");

	envelope_clear(&fx->env);
	assert_null(fx->env.root);
	assert_null(fx->env.type);
	envelope_clear(&fx->env); /* twice is fine */
}

static void test_bad_json(void **state)
{
	struct fx *fx = *state;

	expect_fail(fx, ENV_REQUEST, "{", "malformed", "bad JSON");
	expect_fail(fx, ENV_REQUEST, "", "malformed", "bad JSON");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a1\"} x",
		    "malformed", "bad JSON");
	expect_fail(fx, ENV_REQUEST, "\"a string\"", "malformed", "bad JSON");
	expect_fail(fx, ENV_REQUEST, "{'type':1}", "malformed", "bad JSON");
	assert_null(fx->env.root);
}

static void test_not_object(void **state)
{
	struct fx *fx = *state;

	expect_fail(fx, ENV_REQUEST, "[1,2]", "malformed", "not a JSON object");
	expect_fail(fx, ENV_REQUEST, "[]", "malformed", "not a JSON object");
}

static void test_type_id_v(void **state)
{
	struct fx *fx = *state;
	char buf[256];
	char id[BUS_ID_MAX + 2];

	expect_fail(fx, ENV_REQUEST, "{\"v\":1,\"id\":\"a1\"}", "malformed", "no type");
	expect_fail(fx, ENV_REQUEST, "{\"type\":7,\"v\":1,\"id\":\"a1\"}", "malformed", "no type");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1}", "malformed", "id");
	assert_null(fx->env.id);
	expect_fail(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"id\":\"a1\"}", "malformed",
		    "bad JSON"); /* duplicate id key */
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a 1\"}",
		    "malformed", "id");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"\"}",
		    "malformed", "id");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a\\u00e9\"}",
		    "malformed", "id");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a\\tb\"}",
		    "malformed", "id");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":7}",
		    "malformed", "id");

	/* id length: BUS_ID_MAX (64) ok, 65 not. */
	memset(id, 'i', sizeof id);
	id[BUS_ID_MAX] = '\0';
	snprintf(buf, sizeof buf, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"%s\"}", id);
	expect_ok(fx, ENV_REQUEST, buf);
	assert_int_equal(strlen(fx->env.id), BUS_ID_MAX);
	id[BUS_ID_MAX] = 'i';
	id[BUS_ID_MAX + 1] = '\0';
	snprintf(buf, sizeof buf, "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"%s\"}", id);
	expect_fail(fx, ENV_REQUEST, buf, "malformed", "id");

	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":2,\"id\":\"a1\"}",
		    "malformed", "version");
	/* A failure after the id leaves the root and id for the error reply. */
	assert_non_null(fx->env.root);
	assert_string_equal(fx->env.id, "a1");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"id\":\"a1\"}",
		    "malformed", "version");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":\"1\",\"id\":\"a1\"}",
		    "malformed", "version");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"echo.payload.echo\",\"v\":1.0,\"id\":\"a1\"}",
		    "malformed", "version");
}

static void test_unknown_type(void **state)
{
	struct fx *fx = *state;

	expect_fail(fx, ENV_REQUEST, REQ("echo.nosuch.thing") "}", "unknown_type", "unknown");
	assert_string_equal(fx->env.id, "a1");
	expect_fail(fx, ENV_REQUEST, REQ("nodot") "}", "unknown_type", "unknown");
	expect_fail(fx, ENV_REQUEST, REQ("") "}", "unknown_type", "unknown");
	expect_fail(fx, ENV_REQUEST, REQ(".control.ping") "}", "unknown_type", "unknown");
	expect_fail(fx, ENV_EVENT, REQ("echo.event.nope") "}", "unknown_type", "unknown");
}

/* A reply-only type is never a request, and a table row's "*" name is
 * never a message type. */
static void test_not_a_request(void **state)
{
	struct fx *fx = *state;
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"busd.error\",\"v\":1,\"id\":\"a1\"}",
		    "malformed", "reply-only");
	expect_fail(fx, ENV_REQUEST, "{\"type\":\"*.control.ping\",\"v\":1,\"id\":\"a1\"}",
		    "unknown_type", "unknown message type");
}

static void test_status(void **state)
{
	struct fx *fx = *state;
	static const char *const ok[] = { "ok", "error", "invalid" };
	char buf[128];

	expect_fail(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"status\":\"ok\"}", "malformed",
		    "request carries a status");
	expect_fail(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"status\":null}", "malformed",
		    "status");

	expect_fail(fx, ENV_REPLY, REQ("echo.payload.echo") "}", "malformed", "reply without status");
	expect_fail(fx, ENV_REPLY, REQ("echo.payload.echo") ",\"status\":\"weird\"}", "malformed",
		    "status must be");
	expect_fail(fx, ENV_REPLY, REQ("echo.payload.echo") ",\"status\":1}", "malformed",
		    "reply without status");
	expect_fail(fx, ENV_REPLY, REQ("echo.payload.echo") ",\"status\":\"OK\"}", "malformed",
		    "status must be");

	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		snprintf(buf, sizeof buf, REQ("echo.payload.echo") ",\"status\":\"%s\"}", ok[i]);
		expect_ok(fx, ENV_REPLY, buf);
		assert_string_equal(fx->env.status, ok[i]);
	}
	/* A control reply, and busd's own error reply. */
	expect_ok(fx, ENV_REPLY, REQ("echo.control.stats") ",\"status\":\"ok\",\"requests\":3}");
	expect_ok(fx, ENV_REPLY, REQ("busd.error") ",\"status\":\"error\",\"code\":\"timeout\"}");
}

static void test_event_kinds(void **state)
{
	struct fx *fx = *state;

	expect_ok(fx, ENV_EVENT, REQ("echo.event.fired") "}");
	assert_ptr_equal(fx->env.mt, &msgtypes[MSG_ECHO_EVENT_FIRED]);
	expect_ok(fx, ENV_EVENT, REQ("busd.worker.joined") "}");
	expect_ok(fx, ENV_EVENT, REQ("busd.worker.left") "}");

	expect_fail(fx, ENV_REQUEST, REQ("echo.event.fired") "}", "malformed",
		    "an event type sent as a request");
	expect_fail(fx, ENV_REPLY, REQ("busd.worker.joined") ",\"status\":\"ok\"}", "malformed",
		    "an event type");
	expect_fail(fx, ENV_EVENT, REQ("echo.payload.echo") "}", "malformed", "not an event type");
	expect_fail(fx, ENV_EVENT, REQ("echo.event.emit") "}", "malformed", "not an event type");
	expect_fail(fx, ENV_EVENT, REQ("smtpd.control.ping") "}", "malformed", "not an event type");
}

static void test_idem(void **state)
{
	struct fx *fx = *state;
	char key[BUS_IDEM_MAX + 2];
	char buf[512];

	expect_fail(fx, ENV_REQUEST, REQ("echo.stream.put") "}", "malformed", "without idem");
	expect_ok(fx, ENV_REQUEST, REQ("echo.stream.put") ",\"idem\":\"k-1\"}");
	assert_string_equal(fx->env.idem, "k-1");
	/* The reply echoes the type but needs no idem. */
	expect_ok(fx, ENV_REPLY, REQ("echo.stream.put") ",\"status\":\"ok\"}");
	/* idem is allowed (and checked) on any request. */
	expect_ok(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"idem\":\"k\"}");
	assert_string_equal(fx->env.idem, "k");

	expect_fail(fx, ENV_REQUEST, REQ("echo.stream.put") ",\"idem\":\"k 1\"}", "malformed",
		    "bad idempotency key");
	expect_fail(fx, ENV_REQUEST, REQ("echo.stream.put") ",\"idem\":\"\"}", "malformed",
		    "bad idempotency key");
	expect_fail(fx, ENV_REQUEST, REQ("echo.stream.put") ",\"idem\":5}", "malformed",
		    "bad idempotency key");
	expect_fail(fx, ENV_REQUEST, REQ("echo.stream.put") ",\"idem\":null}", "malformed",
		    "bad idempotency key");

	memset(key, 'k', sizeof key);
	key[BUS_IDEM_MAX] = '\0';
	snprintf(buf, sizeof buf, REQ("echo.stream.put") ",\"idem\":\"%s\"}", key);
	expect_ok(fx, ENV_REQUEST, buf);
	key[BUS_IDEM_MAX] = 'k';
	key[BUS_IDEM_MAX + 1] = '\0';
	snprintf(buf, sizeof buf, REQ("echo.stream.put") ",\"idem\":\"%s\"}", key);
	expect_fail(fx, ENV_REQUEST, buf, "malformed", "bad idempotency key");
}

#define PUT REQ("echo.stream.put") ",\"idem\":\"k1\",\"chunk\":"

static void test_chunk(void **state)
{
	struct fx *fx = *state;

	expect_ok(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":3,\"last\":true}}");
	assert_true(fx->env.has_chunk);
	assert_string_equal(fx->env.stream, "s1");
	assert_int_equal(fx->env.seq, 3);
	assert_true(fx->env.last);
	expect_ok(fx, ENV_REQUEST, PUT "{\"last\":false,\"seq\":0,\"stream\":\"s1\"}}");
	assert_int_equal(fx->env.seq, 0);
	assert_false(fx->env.last);
	expect_ok(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":1000000,\"last\":false}}");

	/* Only a streaming type may carry a chunk. */
	expect_fail(fx, ENV_REQUEST,
		    REQ("echo.payload.echo") ",\"chunk\":{\"stream\":\"s1\",\"seq\":0,\"last\":true}}",
		    "malformed", "does not stream");
	assert_false(fx->env.has_chunk);

	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":0,\"last\":true,\"x\":1}}",
		    "malformed", "chunk must be");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":0}}", "malformed",
		    "chunk must be");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":0,\"x\":true}}", "malformed",
		    "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":-1,\"last\":true}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":1000001,\"last\":true}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":1.5,\"last\":true}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s1\",\"seq\":0,\"last\":1}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"s 1\",\"seq\":0,\"last\":true}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "{\"stream\":\"\",\"seq\":0,\"last\":true}}",
		    "malformed", "bad chunk");
	expect_fail(fx, ENV_REQUEST, PUT "[\"s1\",0,true]}", "malformed", "chunk must be");
	expect_fail(fx, ENV_REQUEST, PUT "null}", "malformed", "chunk must be");
	expect_fail(fx, ENV_REQUEST,
		    PUT "{\"stream\":\"s1\",\"seq\":0,\"seq\":1,\"last\":true}}", "malformed",
		    "bad JSON");
}

static void test_duplicate_keys(void **state)
{
	struct fx *fx = *state;

	expect_fail(fx, ENV_REQUEST,
		    "{\"type\":\"echo.payload.echo\",\"type\":\"echo.stream.put\",\"v\":1,\"id\":\"a1\"}",
		    "malformed", "bad JSON");
	expect_fail(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"v\":1}", "malformed", "bad JSON");
	expect_fail(fx, ENV_REPLY, REQ("echo.payload.echo") ",\"status\":\"ok\",\"status\":\"ok\"}",
		    "malformed", "bad JSON");
	/* Nested objects are checked too. */
	expect_fail(fx, ENV_REQUEST, REQ("echo.payload.echo") ",\"x\":{\"a\":1,\"a\":2}}",
		    "malformed", "bad JSON");
}

/* A valid request padded with spaces to exactly len bytes. */
static char *padded(size_t len)
{
	static const char body[] = "{\"type\":\"echo.payload.echo\",\"v\":1,\"id\":\"a1\"}";
	char *buf = xmalloc(len);
	memset(buf, ' ', len);
	memcpy(buf, body, sizeof body - 1);
	return buf;
}

static void test_too_large(void **state)
{
	struct fx *fx = *state;
	char *buf = padded(BUS_ENVELOPE_MAX + 1);
	int rc = envelope_parse(&fx->env, buf, BUS_ENVELOPE_MAX, ENV_REQUEST, &fx->code, fx->err,
				sizeof fx->err);
	assert_int_equal(rc, 0);
	envelope_clear(&fx->env);

	rc = envelope_parse(&fx->env, buf, BUS_ENVELOPE_MAX + 1, ENV_REQUEST, &fx->code, fx->err,
			    sizeof fx->err);
	free(buf);
	assert_int_equal(rc, -1);
	assert_string_equal(fx->code, "too_large");
	assert_non_null(strstr(fx->err, "too large"));
	assert_null(fx->env.root);
}

static void test_err_truncated(void **state)
{
	struct fx *fx = *state;
	char small[8];

	/* The reason is cut to the buffer, always terminated. */
	memset(small, 'X', sizeof small);
	assert_int_equal(envelope_parse(&fx->env, "[1]", 3, ENV_REQUEST, &fx->code, small,
					sizeof small), -1);
	assert_int_equal(strlen(small), sizeof small - 1);
	envelope_clear(&fx->env);
	assert_int_equal(envelope_parse(&fx->env, "{", 1, ENV_REQUEST, &fx->code, small,
					sizeof small), -1);
	assert_int_equal(strlen(small), sizeof small - 1);
}

/* ---- the type table ------------------------------------------------------------------- */

static void test_msgtype_find(void **state)
{
	(void)state;
	assert_ptr_equal(msgtype_find("echo.payload.echo"), &msgtypes[MSG_ECHO_PAYLOAD_ECHO]);
	assert_ptr_equal(msgtype_find("busd.status.get"), &msgtypes[MSG_BUSD_STATUS_GET]);
	assert_ptr_equal(msgtype_find("busd.error"), &msgtypes[MSG_BUSD_ERROR]);
	assert_ptr_equal(msgtype_find("smtpd.control.ping"), &msgtypes[MSG_CONTROL_PING]);
	assert_string_equal(msgtype_find("smtpd.control.ping")->name, "*.control.ping");
	assert_null(msgtype_find("*.control.ping"));  /* a table row, not a type */
	assert_ptr_equal(msgtype_find("echo.control.ping"), &msgtypes[MSG_CONTROL_PING]);
	assert_ptr_equal(msgtype_find("echo.control.reload"), &msgtypes[MSG_CONTROL_RELOAD]);
	assert_ptr_equal(msgtype_find("busd.control.stats"), &msgtypes[MSG_CONTROL_STATS]);

	assert_null(msgtype_find(""));
	assert_null(msgtype_find("nodot"));
	assert_null(msgtype_find(".control.ping"));
	assert_null(msgtype_find("echo.payload.nope"));
	assert_null(msgtype_find("smtpd.payload.echo"));
	assert_null(msgtype_find("echo.control.pingx"));
	assert_null(msgtype_find("a.b.control.ping"));
}

static void test_msgtype_route(void **state)
{
	(void)state;
	char svc[BUS_SERVICE_MAX + 1];

	assert_int_equal(msgtype_route("echo.payload.echo", svc, sizeof svc), 0);
	assert_string_equal(svc, "echo");
	assert_int_equal(msgtype_route("echo.control.ping", svc, sizeof svc), 0);
	assert_string_equal(svc, "echo.control");
	assert_int_equal(msgtype_route("smtpd.control.ping", svc, sizeof svc), 0);
	assert_string_equal(svc, "smtpd.control");
	assert_int_equal(msgtype_route("busd.error", svc, sizeof svc), 0);
	assert_string_equal(svc, "busd");
	assert_int_equal(msgtype_route("nodot", svc, sizeof svc), -1);
	assert_int_equal(msgtype_route(".payload.echo", svc, sizeof svc), -1);

	/* The service and its NUL must fit. */
	assert_int_equal(msgtype_route("echo.payload.echo", svc, 4), -1);
	assert_int_equal(msgtype_route("echo.payload.echo", svc, 5), 0);
	assert_string_equal(svc, "echo");
	assert_int_equal(msgtype_route("echo.control.ping", svc, 12), -1);
	assert_int_equal(msgtype_route("echo.control.ping", svc, 13), 0);
	assert_string_equal(svc, "echo.control");
}

/* ---- identity ---------------------------------------------------------------------------- */

static void test_caller_ok(void **state)
{
	(void)state;
	const struct msgtype *status = msgtype_find("busd.status.get");
	const struct msgtype *ping = msgtype_find("smtpd.control.ping");
	const struct msgtype *reload = msgtype_find("echo.control.reload");
	const struct msgtype *fired = msgtype_find("echo.event.fired");
	const struct msgtype *echo = msgtype_find("echo.payload.echo");

	assert_non_null(status);
	assert_true(msgtype_caller_ok(status, "roostctl"));
	assert_true(msgtype_caller_ok(status, "*"));
	assert_false(msgtype_caller_ok(status, "echo"));
	assert_false(msgtype_caller_ok(status, ""));
	assert_false(msgtype_caller_ok(status, NULL));
	assert_false(msgtype_caller_ok(status, "roostct"));
	assert_false(msgtype_caller_ok(status, "roostctl2"));

	assert_non_null(ping);
	assert_true(msgtype_caller_ok(ping, "roostctl"));
	assert_true(msgtype_caller_ok(ping, "echo"));
	assert_true(msgtype_caller_ok(ping, "smtpd"));
	assert_true(msgtype_caller_ok(ping, "*"));
	assert_false(msgtype_caller_ok(ping, ""));
	assert_false(msgtype_caller_ok(ping, NULL));
	/* "-" is what ZAP gives an unknown uid: no role. */
	assert_false(msgtype_caller_ok(ping, "-"));

	assert_non_null(reload);
	assert_true(msgtype_caller_ok(reload, "roostctl"));
	assert_true(msgtype_caller_ok(reload, "*"));
	assert_false(msgtype_caller_ok(reload, "echo"));
	assert_false(msgtype_caller_ok(reload, "smtpd"));
	assert_false(msgtype_caller_ok(reload, ""));

	assert_non_null(fired);
	assert_true(msgtype_caller_ok(fired, "echo"));
	assert_false(msgtype_caller_ok(fired, "smtpd"));
	assert_false(msgtype_caller_ok(fired, "roostctl"));
	assert_true(msgtype_caller_ok(fired, "*"));

	assert_non_null(echo);
	assert_true(msgtype_caller_ok(echo, "smtpd"));
	assert_false(msgtype_caller_ok(echo, ""));
}

static void test_register_ok(void **state)
{
	(void)state;
	assert_true(msg_register_ok("echo", "echo"));
	assert_true(msg_register_ok("echo.control", "echo"));
	assert_true(msg_register_ok("echo", "*"));
	assert_true(msg_register_ok("echo.control", "*"));

	/* busd answers its own service and control itself. */
	assert_false(msg_register_ok("busd", "*"));
	assert_false(msg_register_ok("busd", "busd"));
	assert_false(msg_register_ok("busd.control", "*"));
	assert_false(msg_register_ok("busd.control", "busd"));

	assert_false(msg_register_ok("echo", "smtpd"));
	assert_false(msg_register_ok("echo.control", "smtpd"));
	assert_false(msg_register_ok("echo.control", "ech"));
	assert_false(msg_register_ok("echo", "ech"));
	assert_false(msg_register_ok("echox", "echo"));
	assert_false(msg_register_ok("nosuch", "*"));
	assert_false(msg_register_ok("nosuch.control", "*"));
	assert_false(msg_register_ok("echo", ""));
	assert_false(msg_register_ok("echo", "-"));
	assert_false(msg_register_ok("echo", NULL));
	assert_false(msg_register_ok("", "*"));
}

static void test_service_known(void **state)
{
	(void)state;
	assert_true(msg_service_known("echo"));
	assert_true(msg_service_known("echo.control"));
	assert_true(msg_service_known("busd"));
	assert_true(msg_service_known("busd.control"));
	assert_false(msg_service_known("nosuch"));
	assert_false(msg_service_known("nosuch.control"));
	assert_false(msg_service_known(""));
	assert_false(msg_service_known("ech"));
	assert_false(msg_service_known("echox"));
	assert_false(msg_service_known("echo.control.control"));
	assert_false(msg_service_known("*"));
	assert_false(msg_service_known(".control"));
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_valid_request),
		FX_TEST(test_bad_json),
		FX_TEST(test_not_object),
		FX_TEST(test_type_id_v),
		FX_TEST(test_unknown_type),
		FX_TEST(test_not_a_request),
		FX_TEST(test_status),
		FX_TEST(test_event_kinds),
		FX_TEST(test_idem),
		FX_TEST(test_chunk),
		FX_TEST(test_duplicate_keys),
		FX_TEST(test_too_large),
		FX_TEST(test_err_truncated),
		cmocka_unit_test(test_msgtype_find),
		cmocka_unit_test(test_msgtype_route),
		cmocka_unit_test(test_caller_ok),
		cmocka_unit_test(test_register_ok),
		cmocka_unit_test(test_service_known),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
