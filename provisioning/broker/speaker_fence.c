/* speaker_fence: a Mosquitto 2.0 plugin that makes a district client certificate's identity its session.
 *
 * Why a plugin: with `use_identity_as_username`, Mosquitto 2.0.11 calls no authentication plugin for a
 * certificate client (handle_connect.c: "Authentication assumed to be cleared") and looks up the
 * requested client id, closing the old connection and handing over its persistent session
 * (connect__on_authorised), before any ACL check. So any district certificate could take any session.
 * Without `use_identity_as_username`, the broker calls this plugin's MOSQ_EVT_BASIC_AUTH before that
 * lookup, and again for every client on each reload (security_apply_default). Here we:
 *   - take the certificate's CN as the MQTT username (what `use_identity_as_username` did),
 *   - refuse a client id that is not the CN itself or "CN:anything" (docs/protocol.md, client ids),
 *   - refuse a certificate whose serial is in the CRL (plugin_opt_crlfile, the listener's crlfile),
 * and watch that CRL file: when it changes, the broker reloads (SIGHUP to itself), which re-checks every
 * open connection with this plugin and closes the revoked ones, and the listener reloads the CRL for
 * new connections. Built by `speaker-district broker-config` (provisioning/district/fence_plugin.py).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define CRL_POLL_SECONDS 1

static mosquitto_plugin_id_t *plugin_id;
static char *crl_path;
static X509_CRL *crl;
static struct stat crl_stat;
static time_t next_poll;

static void printable(const char *in, char *out, size_t size)
{
	size_t i;
	for(i = 0; in && in[i] && i + 1 < size; i++){
		unsigned char c = (unsigned char)in[i];
		out[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	out[i] = '\0';
}

static X509_CRL *read_crl(void)
{
	FILE *fp = fopen(crl_path, "r");
	X509_CRL *fresh = fp ? PEM_read_X509_CRL(fp, NULL, NULL, NULL) : NULL;
	if(fp) fclose(fp);
	return fresh;
}

/* Without any CRL every client is refused (fail closed at start). A CRL file that no longer reads (being
 * copied over, say) keeps the last good one: closing every connection over a half-written file would
 * silence the whole district. */
static int load_crl(void)
{
	X509_CRL *fresh;

	if(stat(crl_path, &crl_stat) != 0){
		memset(&crl_stat, 0, sizeof(crl_stat));
	}
	fresh = read_crl();
	if(!fresh){
		mosquitto_log_printf(MOSQ_LOG_ERR, "speaker_fence: cannot read a PEM CRL from %s; %s", crl_path,
				crl ? "keeping the one loaded before" : "refusing every client");
		return MOSQ_ERR_UNKNOWN;
	}
	X509_CRL_free(crl);
	crl = fresh;
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: CRL %s loaded", crl_path);
	return MOSQ_ERR_SUCCESS;
}

static bool crl_changed(void)
{
	struct stat now;
	if(stat(crl_path, &now) != 0){
		return crl_stat.st_ino != 0;
	}
	return now.st_ino != crl_stat.st_ino || now.st_size != crl_stat.st_size
		|| now.st_mtim.tv_sec != crl_stat.st_mtim.tv_sec || now.st_mtim.tv_nsec != crl_stat.st_mtim.tv_nsec;
}

/* The certificate's single CN, or NULL when it has none, several, an embedded NUL or a character that
 * would be special in a topic or a client id suffix (the district never issues such a CN). */
static char *certificate_cn(X509 *cert)
{
	X509_NAME *name = X509_get_subject_name(cert);
	int index = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	ASN1_STRING *data;
	const unsigned char *bytes;
	int length;

	if(index < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, index) >= 0) return NULL;
	data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
	if(!data) return NULL;
	bytes = ASN1_STRING_get0_data(data);
	length = ASN1_STRING_length(data);
	if(length <= 0 || (size_t)length != strlen((const char *)bytes)) return NULL;
	if(strpbrk((const char *)bytes, ":/+#")) return NULL;
	return mosquitto_strdup((const char *)bytes);
}

/* A client of identity CN may use client id "CN" (its one long-lived session) or "CN:purpose"
 * (a second connection of the same identity, e.g. "27787-02:selftest", "district:send-1a2b"). */
static bool client_id_belongs_to(const char *client_id, const char *cn)
{
	size_t n = strlen(cn);
	if(!client_id || strncmp(client_id, cn, n) != 0) return false;
	return client_id[n] == '\0' || (client_id[n] == ':' && client_id[n + 1] != '\0');
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	X509 *cert = mosquitto_client_certificate(ed->client);
	X509_REVOKED *revoked = NULL;
	char *cn;
	char shown_id[128], shown_cn[128];
	int rc = MOSQ_ERR_AUTH;

	(void)event;
	(void)userdata;
	printable(client_id, shown_id, sizeof(shown_id));
	if(!cert){
		/* A session whose client is offline (reload re-checks those too): nothing to verify or close. */
		return MOSQ_ERR_AUTH;
	}
	cn = certificate_cn(cert);
	printable(cn, shown_cn, sizeof(shown_cn));
	if(!cn){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: refused client id '%s': certificate without a usable CN", shown_id);
	}else if(!crl){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: refused %s: no CRL loaded", shown_cn);
	}else if(X509_CRL_get0_by_cert(crl, &revoked, cert) == 1){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: refused %s (client id '%s'): certificate revoked", shown_cn, shown_id);
	}else if(!client_id_belongs_to(client_id, cn)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: refused client id '%s' for certificate %s: not its own", shown_id, shown_cn);
	}else{
		rc = mosquitto_set_username(ed->client, cn);
	}
	mosquitto_free(cn);
	X509_free(cert);
	return rc;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	(void)event;
	(void)event_data;
	(void)userdata;
	load_crl();
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	time_t now = time(NULL);
	(void)event;
	(void)event_data;
	(void)userdata;
	if(now < next_poll) return MOSQ_ERR_SUCCESS;
	next_poll = now + CRL_POLL_SECONDS;
	if(crl_changed()){
		X509_CRL *complete;
		memset(&crl_stat, 0, sizeof(crl_stat));
		stat(crl_path, &crl_stat);
		complete = read_crl();
		if(!complete){
			/* Still being written (a plain cp): wait for the next change. */
			mosquitto_log_printf(MOSQ_LOG_WARNING, "speaker_fence: %s changed but is not a complete PEM CRL yet", crl_path);
			return MOSQ_ERR_SUCCESS;
		}
		X509_CRL_free(complete);
		/* Reload the whole broker: the listener picks up the CRL for new connections and every open
		 * connection is checked again by on_basic_auth (revoked ones are closed). */
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "speaker_fence: %s changed, reloading", crl_path);
		raise(SIGHUP);
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	int i;
	(void)userdata;
	plugin_id = identifier;
	for(i = 0; i < option_count; i++){
		if(!strcmp(options[i].key, "crlfile")) crl_path = mosquitto_strdup(options[i].value);
	}
	if(!crl_path){
		mosquitto_log_printf(MOSQ_LOG_ERR, "speaker_fence: plugin_opt_crlfile is required");
		return MOSQ_ERR_INVAL;
	}
	if(load_crl() != MOSQ_ERR_SUCCESS) return MOSQ_ERR_INVAL;
	if(mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL)
			|| mosquitto_callback_register(plugin_id, MOSQ_EVT_TICK, on_tick, NULL, NULL)){
		return MOSQ_ERR_UNKNOWN;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_TICK, on_tick, NULL);
	X509_CRL_free(crl);
	crl = NULL;
	mosquitto_free(crl_path);
	crl_path = NULL;
	return MOSQ_ERR_SUCCESS;
}
