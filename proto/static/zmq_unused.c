/*
 * zmq_unused.c — linked only with ZMQ_LINK=static (the container images):
 * the parts of Debian's libzmq.a that Roost never reaches, answered with
 * "unavailable" instead of linking the libraries behind them.
 *
 * Debian builds libzmq with the GSSAPI security mechanism (libgssapi_krb5,
 * which brings six more Kerberos libraries), the pgm/epgm transports
 * (OpenPGM) and the norm transport (NORM + protokit). Roost's bus uses only
 * ipc:// endpoints that proto/bus.c builds from the bus directory, with the
 * NULL mechanism and a ZAP handler (DESIGN.md, "The bus"): none of the three
 * is reachable from configuration. Linked for real they cost, per process,
 * about 0.7 MB of Kerberos pages mapped at start and 0.5 MB more code in each
 * binary (bench/RESULTS.md, "The stack in containers: memory"), and in every
 * container on a storage driver without shared page cache (fuse-overlayfs).
 *
 * Each function fails the way its library reports that something is not
 * there, along the error paths libzmq 4.3 already has: zmq_connect or
 * zmq_bind of a pgm:// or epgm:// endpoint returns -1 (EINVAL; libzmq
 * resolves those addresses first), a GSSAPI handshake fails and the peer is
 * dropped. pgm_init, which libzmq calls for every new context, succeeds
 * doing nothing. A norm:// endpoint ends the process: libzmq asserts that
 * its NORM engine starts (errno_assert in session_base.cpp, as it would for
 * any NORM failure), and the message names EPROTONOSUPPORT.
 * tests/unit/test_zmq_link.c checks pgm, epgm and GSSAPI, and ipc.
 *
 * The GSSAPI and OpenPGM prototypes come from their own headers (libkrb5-dev,
 * libpgm-dev, dependencies of libzmq3-dev), so a signature that changes in a
 * new Debian release fails to compile here. NORM's normApi.h is C++ only
 * (reference parameters), so its types are restated below from NORM 1.5.
 */
#include <errno.h>
#include <stddef.h>

#include <stdbool.h>
#include <stdint.h>

#include <gssapi/gssapi.h>
#include <pgm/pgm.h>

/* ---- GSSAPI (only with ZMQ_GSSAPI_SERVER / ZMQ_GSSAPI_PLAINTEXT set) ---- */

/* The RFC 2743/2744 name types, as the real library defines them. */
static gss_OID_desc nt_user_name = {10, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x01"};
static gss_OID_desc nt_hostbased = {10, (void *)"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04"};
gss_OID GSS_C_NT_USER_NAME = &nt_user_name;
gss_OID GSS_C_NT_HOSTBASED_SERVICE = &nt_hostbased;

/* Nothing is ever created, so releasing always succeeds. */
static OM_uint32 gss_none(OM_uint32 *minor)
{
	if (minor != NULL)
		*minor = 0;
	return GSS_S_UNAVAILABLE;
}

static OM_uint32 gss_nothing_to_release(OM_uint32 *minor)
{
	if (minor != NULL)
		*minor = 0;
	return GSS_S_COMPLETE;
}

OM_uint32 gss_accept_sec_context(OM_uint32 *minor, gss_ctx_id_t *ctx, gss_cred_id_t cred,
				 gss_buffer_t in, gss_channel_bindings_t cb, gss_name_t *src,
				 gss_OID *mech, gss_buffer_t out, OM_uint32 *flags,
				 OM_uint32 *time_rec, gss_cred_id_t *deleg)
{
	(void)ctx, (void)cred, (void)in, (void)cb, (void)src, (void)mech, (void)out,
		(void)flags, (void)time_rec, (void)deleg;
	return gss_none(minor);
}

OM_uint32 gss_acquire_cred(OM_uint32 *minor, gss_name_t name, OM_uint32 time_req,
			   gss_OID_set mechs, gss_cred_usage_t usage, gss_cred_id_t *cred,
			   gss_OID_set *actual, OM_uint32 *time_rec)
{
	(void)name, (void)time_req, (void)mechs, (void)usage, (void)cred, (void)actual,
		(void)time_rec;
	return gss_none(minor);
}

OM_uint32 gss_init_sec_context(OM_uint32 *minor, gss_cred_id_t cred, gss_ctx_id_t *ctx,
			       gss_name_t target, gss_OID mech, OM_uint32 req_flags,
			       OM_uint32 time_req, gss_channel_bindings_t cb, gss_buffer_t in,
			       gss_OID *actual_mech, gss_buffer_t out, OM_uint32 *flags,
			       OM_uint32 *time_rec)
{
	(void)cred, (void)ctx, (void)target, (void)mech, (void)req_flags, (void)time_req,
		(void)cb, (void)in, (void)actual_mech, (void)out, (void)flags, (void)time_rec;
	return gss_none(minor);
}

OM_uint32 gss_import_name(OM_uint32 *minor, gss_buffer_t in, gss_OID type, gss_name_t *out)
{
	(void)in, (void)type, (void)out;
	return gss_none(minor);
}

OM_uint32 gss_display_name(OM_uint32 *minor, gss_name_t name, gss_buffer_t out, gss_OID *type)
{
	(void)name, (void)out, (void)type;
	return gss_none(minor);
}

OM_uint32 gss_wrap(OM_uint32 *minor, gss_ctx_id_t ctx, int conf_req, gss_qop_t qop,
		   gss_buffer_t in, int *conf_state, gss_buffer_t out)
{
	(void)ctx, (void)conf_req, (void)qop, (void)in, (void)conf_state, (void)out;
	return gss_none(minor);
}

OM_uint32 gss_unwrap(OM_uint32 *minor, gss_ctx_id_t ctx, gss_buffer_t in, gss_buffer_t out,
		     int *conf_state, gss_qop_t *qop)
{
	(void)ctx, (void)in, (void)out, (void)conf_state, (void)qop;
	return gss_none(minor);
}

OM_uint32 gss_delete_sec_context(OM_uint32 *minor, gss_ctx_id_t *ctx, gss_buffer_t out)
{
	(void)ctx, (void)out;
	return gss_nothing_to_release(minor);
}

OM_uint32 gss_release_buffer(OM_uint32 *minor, gss_buffer_t buf)
{
	(void)buf;
	return gss_nothing_to_release(minor);
}

OM_uint32 gss_release_cred(OM_uint32 *minor, gss_cred_id_t *cred)
{
	(void)cred;
	return gss_nothing_to_release(minor);
}

OM_uint32 gss_release_name(OM_uint32 *minor, gss_name_t *name)
{
	(void)name;
	return gss_nothing_to_release(minor);
}

/* ---- OpenPGM (pgm:// and epgm:// endpoints) ---- */

/* libzmq resolves the endpoint first and treats an interface error as
 * EINVAL; with no socket made, nothing after that is called. The error is
 * static: pgm_error_free below does not free it. */
static pgm_error_t pgm_no_device = {PGM_ERROR_DOMAIN_IF, PGM_ERROR_NODEV,
				    (char *)"PGM is not linked into Roost"};

bool pgm_init(pgm_error_t **error)
{
	(void)error;
	return true;
}

bool pgm_shutdown(void)
{
	return true;
}

bool pgm_getaddrinfo(const char *restrict network, const struct pgm_addrinfo_t *const restrict hints,
		     struct pgm_addrinfo_t **restrict res, pgm_error_t **restrict error)
{
	(void)network, (void)hints;
	if (res != NULL)
		*res = NULL;
	if (error != NULL)
		*error = &pgm_no_device;
	return false;
}

void pgm_freeaddrinfo(struct pgm_addrinfo_t *res)
{
	(void)res;
}

void pgm_error_free(pgm_error_t *error)
{
	(void)error;
}

void pgm_free(void *p)
{
	(void)p;
}

bool pgm_socket(pgm_sock_t **restrict sock, const sa_family_t family, const int type,
		const int protocol, pgm_error_t **restrict error)
{
	(void)family, (void)type, (void)protocol;
	if (sock != NULL)
		*sock = NULL;
	if (error != NULL)
		*error = &pgm_no_device;
	return false;
}

bool pgm_bind3(pgm_sock_t *restrict sock, const struct pgm_sockaddr_t *const restrict addr,
	       const socklen_t addrlen, const struct pgm_interface_req_t *const send_req,
	       const socklen_t send_len, const struct pgm_interface_req_t *const recv_req,
	       const socklen_t recv_len, pgm_error_t **restrict error)
{
	(void)sock, (void)addr, (void)addrlen, (void)send_req, (void)send_len, (void)recv_req,
		(void)recv_len;
	if (error != NULL)
		*error = &pgm_no_device;
	return false;
}

bool pgm_connect(pgm_sock_t *restrict sock, pgm_error_t **restrict error)
{
	(void)sock;
	if (error != NULL)
		*error = &pgm_no_device;
	return false;
}

bool pgm_close(pgm_sock_t *sock, bool flush)
{
	(void)sock, (void)flush;
	return true;
}

bool pgm_setsockopt(pgm_sock_t *const restrict sock, const int level, const int name,
		    const void *restrict value, const socklen_t len)
{
	(void)sock, (void)level, (void)name, (void)value, (void)len;
	return false;
}

bool pgm_getsockopt(pgm_sock_t *const restrict sock, const int level, const int name,
		    void *restrict value, socklen_t *restrict len)
{
	(void)sock, (void)level, (void)name, (void)value, (void)len;
	return false;
}

bool pgm_gsi_create_from_data(pgm_gsi_t *restrict gsi, const uint8_t *restrict data, const size_t len)
{
	(void)gsi, (void)data, (void)len;
	return false;
}

int pgm_send(pgm_sock_t *const restrict sock, const void *restrict buf, const size_t len,
	     size_t *restrict sent)
{
	(void)sock, (void)buf, (void)len;
	if (sent != NULL)
		*sent = 0;
	return PGM_IO_STATUS_ERROR;
}

int pgm_recvmsgv(pgm_sock_t *const restrict sock, struct pgm_msgv_t *const restrict msgv,
		 const size_t len, const int flags, size_t *restrict got, pgm_error_t **restrict error)
{
	(void)sock, (void)msgv, (void)len, (void)flags;
	if (got != NULL)
		*got = 0;
	if (error != NULL)
		*error = &pgm_no_device;
	return PGM_IO_STATUS_ERROR;
}

/* ---- NORM (norm:// endpoints) ---- */

/* libzmq's norm engine gives up, with errno, when no instance can be made;
 * nothing else is called on an invalid handle. The types of normApi.h
 * (NORM 1.5.x, extern "C"): handles are const void *, enums ints. */
typedef const void *NormInstanceHandle, *NormSessionHandle, *NormNodeHandle, *NormObjectHandle;
typedef uint16_t NormSessionId, UINT16;
typedef uint32_t NormNodeId, UINT32;
typedef uint8_t UINT8;
typedef int NormDescriptor;
typedef int NormSyncPolicy, NormFlushMode;
typedef struct NormEvent NormEvent;
typedef enum { NORM_OBJECT_NONE } NormObjectType;

const NormInstanceHandle NORM_INSTANCE_INVALID = 0;
const NormSessionHandle NORM_SESSION_INVALID = 0;
const NormObjectHandle NORM_OBJECT_INVALID = 0;
const NormNodeId NORM_NODE_ANY = 0xffffffff;

NormInstanceHandle NormCreateInstance(bool priority_boost)
{
	(void)priority_boost;
	errno = EPROTONOSUPPORT;
	return NORM_INSTANCE_INVALID;
}

NormSessionHandle NormCreateSession(NormInstanceHandle inst, const char *addr, UINT16 port,
				    NormNodeId id)
{
	(void)inst, (void)addr, (void)port, (void)id;
	errno = EPROTONOSUPPORT;
	return NORM_SESSION_INVALID;
}

void NormDestroyInstance(NormInstanceHandle inst) { (void)inst; }
void NormStopInstance(NormInstanceHandle inst) { (void)inst; }
void NormDestroySession(NormSessionHandle s) { (void)s; }
void NormStopReceiver(NormSessionHandle s) { (void)s; }
void NormStopSender(NormSessionHandle s) { (void)s; }
void NormNodeDelete(NormNodeHandle n) { (void)n; }
void NormSetDefaultUnicastNack(NormSessionHandle s, bool on) { (void)s, (void)on; }
void NormSetDefaultSyncPolicy(NormSessionHandle s, NormSyncPolicy p) { (void)s, (void)p; }
void NormObjectSetUserData(NormObjectHandle o, const void *d) { (void)o, (void)d; }

void NormSetCongestionControl(NormSessionHandle s, bool on, bool adjust_rate)
{
	(void)s, (void)on, (void)adjust_rate;
}

void NormSetRxPortReuse(NormSessionHandle s, bool on, const char *rx_addr, const char *sender,
			UINT16 port)
{
	(void)s, (void)on, (void)rx_addr, (void)sender, (void)port;
}

void NormStreamFlush(NormObjectHandle o, bool eom, NormFlushMode mode)
{
	(void)o, (void)eom, (void)mode;
}

NormDescriptor NormGetDescriptor(NormInstanceHandle inst)
{
	(void)inst;
	return -1;   /* NORM_DESCRIPTOR_INVALID */
}

bool NormGetNextEvent(NormInstanceHandle inst, NormEvent *ev, bool wait)
{
	(void)inst, (void)ev, (void)wait;
	return false;
}

NormSessionId NormGetRandomSessionId(void) { return 0; }
bool NormIsUnicastAddress(const char *addr) { (void)addr; return false; }
NormObjectType NormObjectGetType(NormObjectHandle o) { (void)o; return NORM_OBJECT_NONE; }
const void *NormObjectGetUserData(NormObjectHandle o) { (void)o; return NULL; }
bool NormSetLoopback(NormSessionHandle s, bool on) { (void)s, (void)on; return false; }
bool NormSetMulticastInterface(NormSessionHandle s, const char *i) { (void)s, (void)i; return false; }
bool NormSetTTL(NormSessionHandle s, unsigned char ttl) { (void)s, (void)ttl; return false; }
bool NormStartReceiver(NormSessionHandle s, UINT32 space) { (void)s, (void)space; return false; }

bool NormStartSender(NormSessionHandle s, NormSessionId id, UINT32 space, UINT16 seg,
		     UINT16 ndata, UINT16 nparity, UINT8 fec)
{
	(void)s, (void)id, (void)space, (void)seg, (void)ndata, (void)nparity, (void)fec;
	return false;
}

NormObjectHandle NormStreamOpen(NormSessionHandle s, UINT32 size, const char *info, unsigned int len)
{
	(void)s, (void)size, (void)info, (void)len;
	return NORM_OBJECT_INVALID;
}

bool NormStreamRead(NormObjectHandle o, char *buf, unsigned int *n)
{
	(void)o, (void)buf;
	if (n != NULL)
		*n = 0;
	return false;
}

bool NormStreamSeekMsgStart(NormObjectHandle o) { (void)o; return false; }

unsigned int NormStreamWrite(NormObjectHandle o, const char *buf, unsigned int n)
{
	(void)o, (void)buf, (void)n;
	return 0;
}
