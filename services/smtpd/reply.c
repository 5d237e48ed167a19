/*
 * reply.c — the one table of SMTP replies (STYLE.md 10, Postfix's
 * cleanup_strerror.c): every reply smtpd sends is a row here, with its
 * basic code (RFC 5321 4.2), its enhanced status code (RFC 3463, sent per
 * RFC 2034 on every reply but the greeting, EHLO/HELO and 354) and its text.
 * A row's text is a printf format; its arguments are noted beside it.
 */
#include "smtpd.h"

#include <stdarg.h>
#include <stdio.h>

const reply_t reply_table[R_COUNT] = {
	[R_GREETING]          = { 220, NULL, "%s ESMTP Roost" },                  /* hostname */
	[R_BYE]               = { 221, "2.0.0", "Bye" },
	[R_OK]                = { 250, "2.0.0", "OK" },
	[R_HELO]              = { 250, NULL, "%s" },                              /* hostname */
	[R_RESET]             = { 250, "2.0.0", "Reset" },
	[R_NOOP]              = { 250, "2.0.0", "OK" },
	[R_VRFY]              = { 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery" },
	[R_HELP]              = { 214, "2.0.0", "See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY QUIT STARTTLS" },
	[R_MAIL_OK]           = { 250, "2.1.0", "Sender OK" },
	[R_RCPT_OK]           = { 250, "2.1.5", "Recipient OK" },
	[R_DATA_GO]           = { 354, NULL, "End data with <CR><LF>.<CR><LF>" },
	[R_STORED]            = { 250, "2.0.0", "OK: queued as %s" },             /* queue id */
	[R_BDAT_OK]           = { 250, "2.0.0", "%s octets received" },           /* count */
	[R_TLS_GO]            = { 220, "2.0.0", "Ready to start TLS" },
	[R_SHUTDOWN]          = { 421, "4.3.2", "Service shutting down, closing connection" },
	[R_TIMEOUT]           = { 421, "4.4.2", "Idle timeout, closing connection" },
	[R_TOO_MANY_SESSIONS] = { 421, "4.3.2", "Too many connections, try again later" },
	[R_TOO_MANY_PER_IP]   = { 421, "4.7.0", "Too many connections from your address, try again later" },
	[R_TOO_MANY_ERRORS]   = { 421, "4.7.0", "Too many errors, closing connection" },
	[R_TOO_MANY_COMMANDS] = { 421, "4.7.0", "Too many commands, closing connection" },
	[R_TEMP_STORE]        = { 451, "4.3.0", "Temporary failure storing the message, try again later" },
	[R_DISK_FULL]         = { 452, "4.3.1", "Insufficient system storage, try again later" },
	[R_MAILBOX_FULL]      = { 452, "4.2.2", "Mailbox full, try again later" },
	[R_TOO_MANY_RCPTS]    = { 452, "4.5.3", "Too many recipients" },
	[R_TLS_UNAVAILABLE]   = { 454, "4.7.0", "TLS not available" },
	[R_LINE_TOO_LONG]     = { 500, "5.5.2", "Line too long" },
	[R_UNKNOWN]           = { 500, "5.5.2", "Command not recognized" },
	[R_SYNTAX]            = { 501, "5.5.4", "Syntax error in parameters" },
	[R_BAD_ARGS]          = { 501, "5.5.4", "This command takes no arguments" },
	[R_BAD_HELO]          = { 501, "5.5.4", "Invalid domain name" },
	[R_NO_PARAMS]         = { 555, "5.5.4", "Parameters not recognized or not implemented" },
	[R_NOT_IMPLEMENTED]   = { 502, "5.5.1", "Command not implemented" },  /* for verbs we know but refuse */
	[R_ORDER]             = { 503, "5.5.1", "Bad sequence of commands" },
	[R_NEED_HELO]         = { 503, "5.5.1", "Send EHLO or HELO first" },
	[R_NEED_MAIL]         = { 503, "5.5.1", "Need MAIL command first" },
	[R_NEED_RCPT]         = { 503, "5.5.1", "Need RCPT command first" },
	[R_NESTED_MAIL]       = { 503, "5.5.1", "Sender already specified" },
	[R_TLS_ALREADY]       = { 503, "5.5.1", "TLS already active" },
	[R_MIXED_BDAT]        = { 503, "5.5.1", "DATA after BDAT is not allowed" },
	[R_BAD_SENDER]        = { 553, "5.1.7", "Bad sender address syntax" },
	[R_BAD_RCPT]          = { 553, "5.1.3", "Bad recipient address syntax" },
	[R_NO_USER]           = { 550, "5.1.1", "No such user here" },
	[R_RELAY]             = { 554, "5.7.1", "Relay access denied" },
	[R_UTF8_NEEDED]       = { 553, "5.6.7", "Non-ASCII address needs SMTPUTF8" },
	[R_SIZE_EXCEEDED]     = { 552, "5.3.4", "Message size exceeds fixed limit" },
	[R_BAD_PARAM]         = { 501, "5.5.4", "Bad parameter value" },
	[R_BARE_NEWLINE]      = { 550, "5.6.0", "Message contains bare CR or LF (use CRLF line ends)" },
	[R_HOPS]              = { 554, "5.4.6", "Too many hops (mail loop?)" },
	[R_EARLY_TALKER]      = { 554, "5.5.1", "Protocol error: you talked before my greeting" },
	[R_POLICY]            = { 550, "5.7.1", "Rejected by policy" },           /* policyd/dkimd hooks */
	[R_BAD_UTF8]          = { 553, "5.6.7", "Malformed UTF-8 in address" },
	[R_BARE_LF_CMD]       = { 500, "5.5.2", "Command lines must end with CRLF" },
	[R_BAD_CHARS]         = { 500, "5.5.2", "Control characters in command" },
};

size_t reply_vformat(char *buf, size_t len, enum reply_id id, va_list ap)
{
	const reply_t *r = &reply_table[id];
	int n = r->enh ? snprintf(buf, len, "%d %s ", r->code, r->enh)
		       : snprintf(buf, len, "%d ", r->code);
	if (n < 0 || (size_t)n >= len - 2)
		n = 0;
	int m = vsnprintf(buf + n, len - (size_t)n - 2, r->text, ap);
	size_t o = (size_t)n + (m < 0 ? 0 : (size_t)m < len - (size_t)n - 2 ? (size_t)m
							 : len - (size_t)n - 3);
	/* Nothing from outside reaches reply text but bounded, checked values;
	 * still, a CR or LF would split a reply: never send one. */
	for (size_t i = 0; i < o; i++)
		if (buf[i] == '\r' || buf[i] == '\n')
			buf[i] = ' ';
	buf[o++] = '\r';
	buf[o++] = '\n';
	return o;
}

size_t reply_format(char *buf, size_t len, enum reply_id id, ...)
{
	va_list ap;
	va_start(ap, id);
	size_t n = reply_vformat(buf, len, id, ap);
	va_end(ap);
	return n;
}
