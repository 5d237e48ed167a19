/*
 * test_config.c — cmocka unit tests for proto/config.c (roost.conf).
 *
 * Each test gets a fixture (setup/teardown) that owns its temp file, temp
 * directory, saved working directory and config, so a failing assertion
 * still cleans up. The environment is scrubbed of every ROOST_* variable
 * config.c reads before and after each test, so the host's environment
 * cannot leak into the results.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "util.h"

/* Every variable config.c may read: cleared around each test. */
static const char *const roost_env[] = {
	"ROOST_CONFIG", "ROOST_DATA_DIR", "ROOST_BUS_DIR", "ROOST_HOSTNAME",
	"ROOST_LISTEN", "ROOST_SMTP_PORT", "ROOST_SUBMISSION_PORT",
	"ROOST_SUBMISSIONS_PORT", "ROOST_IMAP_PORT", "ROOST_IMAPS_PORT",
	"ROOST_RESOLVER", "ROOST_TLS_CERT", "ROOST_TLS_KEY", "ROOST_LOG_LEVEL",
	"ROOST_BUS_HEARTBEAT_MS", "ROOST_BUS_TIMEOUT_MS", "ROOST_BUS_RETRIES",
	"ROOST_BUS_QUEUE_TIMEOUT_MS", "ROOST_BUS_ACL", "ROOST_BUS_GROUP",
	"ROOST_MAX_MESSAGE_SIZE",
};

struct fx {
	char file[64];      /* temp config file, "" if none */
	char dir[64];       /* temp directory, "" if none */
	char cwd[PATH_MAX]; /* working directory to return to, "" if unchanged */
	config_t *cfg;
	char err[512];
	char want[512];     /* expected error, built per test */
};

static void clear_env(void)
{
	for (size_t i = 0; i < ARRAY_LEN(roost_env); i++)
		unsetenv(roost_env[i]);
}

static int fx_setup(void **state)
{
	clear_env();
	*state = xcalloc(1, sizeof(struct fx));
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *fx = *state;
	char path[PATH_MAX];

	config_free(&fx->cfg);
	if (fx->file[0] != '\0')
		unlink(fx->file);
	if (fx->cwd[0] != '\0' && chdir(fx->cwd) != 0)
		return -1;
	if (fx->dir[0] != '\0') {
		snprintf(path, sizeof path, "%s/roost.conf", fx->dir);
		unlink(path);
		rmdir(fx->dir);
	}
	free(fx);
	clear_env();
	return 0;
}

/* Writes len bytes of data to a fresh mkstemp file recorded in fx->file. */
static void write_file(struct fx *fx, const char *data, size_t len)
{
	strcpy(fx->file, "/tmp/roost-test-config-XXXXXX");
	int fd = mkstemp(fx->file);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* Writes text to the temp file and loads it into fx->cfg. */
static config_t *load_text(struct fx *fx, const char *text)
{
	write_file(fx, text, strlen(text));
	fx->err[0] = '\0';
	fx->cfg = config_load(fx->file, fx->err, sizeof fx->err);
	return fx->cfg;
}

/* Loads text expecting failure with "<file>:<line>: <msg>". */
static void expect_load_error(struct fx *fx, const char *text, int line,
			      const char *msg)
{
	assert_null(load_text(fx, text));
	snprintf(fx->want, sizeof fx->want, "%s:%d: %s", fx->file, line, msg);
	assert_string_equal(fx->err, fx->want);
	unlink(fx->file);
	fx->file[0] = '\0';
}

/* Moves into a fresh empty directory; teardown returns and removes it. */
static void enter_temp_dir(struct fx *fx)
{
	assert_non_null(getcwd(fx->cwd, sizeof fx->cwd));
	strcpy(fx->dir, "/tmp/roost-test-dir-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	assert_int_equal(chdir(fx->dir), 0);
}

static void test_good_file(void **state)
{
	struct fx *fx = *state;
	const char *text =
		"# a comment\n"
		"   # an indented comment\n"
		"\n"
		"   \t\n"
		"data_dir=/srv/roost\n"
		"hostname   =   mx.example.org   \n"
		"listen = \"  spaced  \"\n"
		"resolver = \"a \\\"q\\\" b\\\\c\"  \n"
		"tls_cert = /etc/ssl/a#b.pem\n"
		"log_level = info # not a comment\n"
		"bus_acl =\n"
		"smtp_port = 25\r\n"
		"  bus_group\t=\troost";  /* last line without newline */

	assert_non_null(load_text(fx, text));
	assert_string_equal(config_path(fx->cfg), fx->file);
	assert_string_equal(config_get(fx->cfg, "data_dir", NULL), "/srv/roost");
	assert_string_equal(config_get(fx->cfg, "hostname", NULL), "mx.example.org");
	assert_string_equal(config_get(fx->cfg, "listen", NULL), "  spaced  ");
	assert_string_equal(config_get(fx->cfg, "resolver", NULL), "a \"q\" b\\c");
	assert_string_equal(config_get(fx->cfg, "tls_cert", NULL), "/etc/ssl/a#b.pem");
	assert_string_equal(config_get(fx->cfg, "log_level", NULL),
			    "info # not a comment");
	assert_string_equal(config_get(fx->cfg, "bus_acl", "def"), "");
	assert_string_equal(config_get(fx->cfg, "smtp_port", NULL), "25");
	assert_string_equal(config_get(fx->cfg, "bus_group", NULL), "roost");
	assert_string_equal(config_get(fx->cfg, "tls_key", "dflt"), "dflt");
	assert_null(config_get(fx->cfg, "imap_port", NULL));
}

static void test_empty_file(void **state)
{
	struct fx *fx = *state;

	assert_non_null(load_text(fx, ""));
	assert_string_equal(config_path(fx->cfg), fx->file);
	assert_null(config_get(fx->cfg, "hostname", NULL));
}

static void test_malformed_lines(void **state)
{
	struct fx *fx = *state;
	static const struct {
		const char *text;
		int line;
		const char *msg;
	} cases[] = {
		{ "hostname = a\n\nnot a pair\n", 3, "expected 'key = value'" },
		{ "= value\n", 1, "expected 'key = value'" },
		{ "# c\nHostname = x\n", 2, "expected 'key = value'" },
		{ "hostname x\n", 1, "expected 'key = value'" },
		{ "smtp-port = 25\n", 1, "expected 'key = value'" },
		{ "\n\nhostname\n", 3, "expected 'key = value'" },
		{ "listen = \"open\n", 1, "listen: unterminated quoted value" },
		{ "listen = \"a\" b\n", 1, "listen: unexpected text after closing quote" },
		{ "x\n", 1, "expected 'key = value'" },
		{ "listen = \"a\\nb\"\n", 1,
		  "listen: bad escape in quoted value (only \\\" and \\\\)" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa = 1\n",
		  1, "key longer than 64 bytes" },
	};

	for (size_t i = 0; i < ARRAY_LEN(cases); i++)
		expect_load_error(fx, cases[i].text, cases[i].line, cases[i].msg);
}

static void test_unknown_key(void **state)
{
	expect_load_error(*state, "hostname = a\n# c\nsmpt_port = 25\n", 3,
			  "unknown key 'smpt_port'");
}

static void test_duplicate_key(void **state)
{
	expect_load_error(*state, "# c\nlisten = a\nhostname = h\nlisten = b\n", 4,
			  "duplicate key 'listen' (first on line 2)");
}

/* A 4096-byte line is fine, one more byte is an error naming its line. */
static void test_line_too_long(void **state)
{
	struct fx *fx = *state;
	char *text = xmalloc(2 * 4100 + 64);
	size_t n = 0;

	n += (size_t)sprintf(text, "hostname = h\n#");
	memset(text + n, 'x', 4095);
	n += 4095;
	text[n++] = '\n';
	text[n] = '\0';
	assert_non_null(load_text(fx, text));
	config_free(&fx->cfg);
	unlink(fx->file);
	text[n++] = '#';
	memset(text + n, 'y', 4096);
	n += 4096;
	strcpy(text + n, "\nlisten = a\n");
	expect_load_error(fx, text, 3, "line too long");
	free(text);
}

/* A value of 4000 bytes is fine, 4001 is an error. */
static void test_value_too_long(void **state)
{
	struct fx *fx = *state;
	char *text = xmalloc(4100);
	size_t n = (size_t)sprintf(text, "bus_acl = ");

	memset(text + n, 'v', 4000);
	strcpy(text + n + 4000, "\n");
	assert_non_null(load_text(fx, text));
	assert_int_equal(strlen(config_get(fx->cfg, "bus_acl", NULL)), 4000);
	config_free(&fx->cfg);
	unlink(fx->file);
	strcpy(text + n + 4000, "v\n");
	expect_load_error(fx, text, 1, "bus_acl: value longer than 4000 bytes");
	free(text);
}

static void test_nul_byte(void **state)
{
	struct fx *fx = *state;
	static const char text[] = "hostname = a\nlis\0ten = b\n";

	write_file(fx, text, sizeof text - 1);
	assert_null(config_load(fx->file, fx->err, sizeof fx->err));
	snprintf(fx->want, sizeof fx->want, "%s:2: NUL byte in file", fx->file);
	assert_string_equal(fx->err, fx->want);
}

static void test_missing_path(void **state)
{
	struct fx *fx = *state;

	assert_null(config_load("/nonexistent/roost.conf", fx->err, sizeof fx->err));
	assert_string_equal(fx->err, "/nonexistent/roost.conf: No such file or directory");
	/* A directory opens but cannot be read: still an error, not empty. */
	assert_null(config_load("/tmp", fx->err, sizeof fx->err));
	assert_non_null(strstr(fx->err, "Is a directory"));
	/* A NULL err buffer must be tolerated. */
	assert_null(config_load("/nonexistent/roost.conf", NULL, 0));
}

static void test_env_overrides_file(void **state)
{
	struct fx *fx = *state;
	long port = 0;

	assert_non_null(load_text(fx, "smtp_port = 25\nhostname = file.example\n"));
	setenv("ROOST_SMTP_PORT", "2525", 1);
	assert_string_equal(config_get(fx->cfg, "smtp_port", "1"), "2525");
	assert_int_equal(config_get_int(fx->cfg, "smtp_port", 1, 1, 65535, &port,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(port, 2525);
	assert_string_equal(config_get(fx->cfg, "hostname", NULL), "file.example");
	unsetenv("ROOST_SMTP_PORT");
	assert_string_equal(config_get(fx->cfg, "smtp_port", "1"), "25");
}

static void test_env_for_absent_key(void **state)
{
	struct fx *fx = *state;
	config_t *empty = config_new_empty();

	assert_non_null(load_text(fx, "listen = 127.0.0.1\n"));
	setenv("ROOST_HOSTNAME", "env.example", 1);
	assert_string_equal(config_get(fx->cfg, "hostname", "def"), "env.example");
	assert_string_equal(config_get(empty, "hostname", "def"), "env.example");
	assert_null(config_path(empty));
	config_free(&empty);
}

static void test_env_empty_counts_as_set(void **state)
{
	struct fx *fx = *state;

	assert_non_null(load_text(fx, "listen = 127.0.0.1\n"));
	setenv("ROOST_LISTEN", "", 1);
	setenv("ROOST_HOSTNAME", "", 1);
	assert_string_equal(config_get(fx->cfg, "listen", "def"), "");
	assert_string_equal(config_get(fx->cfg, "hostname", "def"), "");
}

static void test_get_int_ok(void **state)
{
	struct fx *fx = *state;
	long v = 0;

	assert_non_null(load_text(fx, "smtp_port = 25\nbus_retries = -3\n"
				      "max_message_size = 52428800\n"));
	assert_int_equal(config_get_int(fx->cfg, "smtp_port", 1, 1, 65535, &v,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(v, 25);
	assert_int_equal(config_get_int(fx->cfg, "bus_retries", 0, -10, 10, &v,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(v, -3);
	assert_int_equal(config_get_int(fx->cfg, "max_message_size", 0, 0, LONG_MAX,
					&v, fx->err, sizeof fx->err), 0);
	assert_int_equal(v, 52428800);
	/* Unset: the default, even one outside [min, max] is not checked. */
	assert_int_equal(config_get_int(fx->cfg, "imap_port", 143, 1, 65535, &v,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(v, 143);
	/* Bounds are inclusive. */
	setenv("ROOST_IMAPS_PORT", "65535", 1);
	assert_int_equal(config_get_int(fx->cfg, "imaps_port", 993, 1, 65535, &v,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(v, 65535);
}

static void test_get_int_env_errors(void **state)
{
	struct fx *fx = *state;
	static const char *const bad[] = {
		"70000", "0", "", " 25", "+25", "25x", "25 ", "0x19", "-", "--5",
		"99999999999999999999999", "-99999999999999999999999", "abc",
	};
	long v = 7;

	fx->cfg = config_new_empty();
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		setenv("ROOST_SMTP_PORT", bad[i], 1);
		assert_int_equal(config_get_int(fx->cfg, "smtp_port", 25, 1, 65535,
						&v, fx->err, sizeof fx->err), -1);
		snprintf(fx->want, sizeof fx->want,
			 "ROOST_SMTP_PORT: '%s' is not an integer in 1..65535", bad[i]);
		assert_string_equal(fx->err, fx->want);
		assert_int_equal(v, 7); /* untouched on error */
	}
}

static void test_get_int_file_errors(void **state)
{
	struct fx *fx = *state;
	long v = 7;

	assert_non_null(load_text(fx, "# ports\n\nhostname = h\nimap_port = 143\n"
				      "smtp_port = abc\nsubmission_port = 70000\n"));
	assert_int_equal(config_get_int(fx->cfg, "smtp_port", 25, 1, 65535, &v,
					fx->err, sizeof fx->err), -1);
	snprintf(fx->want, sizeof fx->want,
		 "%s:5: smtp_port: 'abc' is not an integer in 1..65535", fx->file);
	assert_string_equal(fx->err, fx->want);
	assert_int_equal(config_get_int(fx->cfg, "submission_port", 587, 1, 65535,
					&v, fx->err, sizeof fx->err), -1);
	snprintf(fx->want, sizeof fx->want,
		 "%s:6: submission_port: '70000' is not an integer in 1..65535",
		 fx->file);
	assert_string_equal(fx->err, fx->want);
	assert_int_equal(v, 7);
	/* The environment fixes a bad file value, and is blamed when it is bad. */
	setenv("ROOST_SMTP_PORT", "26", 1);
	assert_int_equal(config_get_int(fx->cfg, "smtp_port", 25, 1, 65535, &v,
					fx->err, sizeof fx->err), 0);
	assert_int_equal(v, 26);
}

static void test_roost_config_missing(void **state)
{
	struct fx *fx = *state;

	setenv("ROOST_CONFIG", "/nonexistent/roost-test.conf", 1);
	assert_null(config_load(NULL, fx->err, sizeof fx->err));
	assert_string_equal(fx->err, "ROOST_CONFIG=/nonexistent/roost-test.conf: "
				     "No such file or directory");
}

static void test_roost_config_used(void **state)
{
	struct fx *fx = *state;

	write_file(fx, "hostname = via-env\n", 19);
	setenv("ROOST_CONFIG", fx->file, 1);
	enter_temp_dir(fx);
	fx->cfg = config_load(NULL, fx->err, sizeof fx->err);
	assert_non_null(fx->cfg);
	assert_string_equal(config_path(fx->cfg), fx->file);
	assert_string_equal(config_get(fx->cfg, "hostname", NULL), "via-env");
}

static void test_default_search_no_file(void **state)
{
	struct fx *fx = *state;

	/* This test is about a machine without a system-wide config. */
	if (access("/etc/roost/roost.conf", F_OK) == 0)
		skip();
	enter_temp_dir(fx);
	fx->cfg = config_load(NULL, fx->err, sizeof fx->err);
	assert_non_null(fx->cfg);
	assert_null(config_path(fx->cfg));
	assert_null(config_get(fx->cfg, "hostname", NULL));
	assert_string_equal(config_data_dir(fx->cfg), "./var");
}

static void test_default_search_cwd(void **state)
{
	struct fx *fx = *state;
	FILE *f;

	enter_temp_dir(fx);
	f = fopen("roost.conf", "w");
	assert_non_null(f);
	fputs("hostname = here\nbogus = 1\n", f);
	assert_int_equal(fclose(f), 0);
	/* Errors name the path found by the search. */
	assert_null(config_load(NULL, fx->err, sizeof fx->err));
	assert_string_equal(fx->err, "./roost.conf:2: unknown key 'bogus'");
	f = fopen("roost.conf", "w");
	assert_non_null(f);
	fputs("hostname = here\n", f);
	assert_int_equal(fclose(f), 0);
	fx->cfg = config_load(NULL, fx->err, sizeof fx->err);
	assert_non_null(fx->cfg);
	assert_string_equal(config_path(fx->cfg), "./roost.conf");
	assert_string_equal(config_get(fx->cfg, "hostname", NULL), "here");
}

/* A file that exists but cannot be read must not fall through to defaults. */
static void test_unreadable_file(void **state)
{
	struct fx *fx = *state;

	if (geteuid() == 0)
		skip(); /* root reads through mode 000 */
	write_file(fx, "hostname = h\n", 13);
	assert_int_equal(chmod(fx->file, 0), 0);
	assert_null(config_load(fx->file, fx->err, sizeof fx->err));
	snprintf(fx->want, sizeof fx->want, "%s: Permission denied", fx->file);
	assert_string_equal(fx->err, fx->want);
}

static void test_dirs(void **state)
{
	struct fx *fx = *state;
	config_t *c = config_new_empty();

	assert_string_equal(config_data_dir(c), "./var");
	assert_string_equal(config_bus_dir(c), "./var/bus");
	config_free(&c);

	assert_non_null(load_text(fx, "data_dir = /srv/roost/\n"));
	assert_string_equal(config_data_dir(fx->cfg), "/srv/roost/");
	assert_string_equal(config_bus_dir(fx->cfg), "/srv/roost/bus");
	setenv("ROOST_BUS_DIR", "/run/roost", 1);
	assert_string_equal(config_bus_dir(fx->cfg), "/run/roost");
	unsetenv("ROOST_BUS_DIR");
	config_free(&fx->cfg);
	unlink(fx->file);

	assert_non_null(load_text(fx, "data_dir = /d\nbus_dir = /b\n"));
	assert_string_equal(config_bus_dir(fx->cfg), "/b");
	config_free(&fx->cfg);

	/* The environment's data_dir, read at load time, wins over the file's. */
	setenv("ROOST_DATA_DIR", "/env/data", 1);
	fx->cfg = config_load(fx->file, fx->err, sizeof fx->err);
	assert_non_null(fx->cfg);
	assert_string_equal(config_bus_dir(fx->cfg), "/b");
	config_free(&fx->cfg);
	unlink(fx->file);
	assert_non_null(load_text(fx, "hostname = h\n"));
	assert_string_equal(config_data_dir(fx->cfg), "/env/data");
	assert_string_equal(config_bus_dir(fx->cfg), "/env/data/bus");
	config_free(&fx->cfg);

	setenv("ROOST_DATA_DIR", "/", 1);
	c = config_new_empty();
	assert_string_equal(config_bus_dir(c), "/bus");
	config_free(&c);
}

static void test_free_nulls(void **state)
{
	(void)state;
	config_t *c = config_new_empty();
	config_t *none = NULL;

	assert_non_null(c);
	config_free(&c);
	assert_null(c);
	config_free(&c);    /* already freed: no-op */
	config_free(&none);
	config_free(NULL);
}

/* Asking for a key not in the table is a bug: the process must abort. */
static void test_unknown_key_aborts(void **state)
{
	(void)state;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		config_t *c = config_new_empty();
		int devnull = open("/dev/null", O_WRONLY);
		if (devnull >= 0)
			dup2(devnull, STDERR_FILENO);
		config_get(c, "smpt_port", NULL);
		_exit(0); /* not reached if config_get aborts */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_good_file),
		FX_TEST(test_empty_file),
		FX_TEST(test_malformed_lines),
		FX_TEST(test_unknown_key),
		FX_TEST(test_duplicate_key),
		FX_TEST(test_line_too_long),
		FX_TEST(test_value_too_long),
		FX_TEST(test_nul_byte),
		FX_TEST(test_missing_path),
		FX_TEST(test_env_overrides_file),
		FX_TEST(test_env_for_absent_key),
		FX_TEST(test_env_empty_counts_as_set),
		FX_TEST(test_get_int_ok),
		FX_TEST(test_get_int_env_errors),
		FX_TEST(test_get_int_file_errors),
		FX_TEST(test_roost_config_missing),
		FX_TEST(test_roost_config_used),
		FX_TEST(test_default_search_no_file),
		FX_TEST(test_default_search_cwd),
		FX_TEST(test_unreadable_file),
		FX_TEST(test_dirs),
		FX_TEST(test_free_nulls),
		FX_TEST(test_unknown_key_aborts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
