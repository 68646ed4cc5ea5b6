/*
 * kvf_json.h: thin helpers over jansson for the JSON the daemons read and
 * write (OpenAI request bodies, admin `json` output, protocol documents).
 *
 * Getters validate type and range in one call and, on failure, leave a message
 * naming the field (kvf_errmsg()) and the field name itself
 * (kvf_json_bad_param()) so an API can answer OpenAI-style errors
 * {"error":{"message","type","param","code"}} without extra bookkeeping.
 * "opt" getters leave *out untouched and return 0 when the key is absent or
 * null; "req" getters fail when it is absent.
 */
#ifndef KVF_JSON_H
#define KVF_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

/* Parses a whole buffer holding one JSON object or array, exactly what
 * jansson's json_loadb(JSON_REJECT_DUPLICATES) accepts but about 10x faster
 * on long strings (json_parse.c). Errors (KVF_E_PARSE) name line and column.
 * *out is a new reference. */
int kvf_json_load(const char *buf, size_t len, json_t **out);

/* Parses a whole buffer that must hold one JSON object. Errors name line and
 * column. *out is a new reference. */
int kvf_json_parse_object(const char *buf, size_t len, json_t **out);

int kvf_json_opt_int(const json_t *obj, const char *key, int64_t min, int64_t max, int64_t *out);
int kvf_json_req_int(const json_t *obj, const char *key, int64_t min, int64_t max, int64_t *out);
/* Accepts JSON integers and reals. */
int kvf_json_opt_double(const json_t *obj, const char *key, double min, double max, double *out);
int kvf_json_opt_bool(const json_t *obj, const char *key, int *out);
/* *out borrows the string from obj. */
int kvf_json_opt_string(const json_t *obj, const char *key, const char **out);
int kvf_json_req_string(const json_t *obj, const char *key, const char **out);
/* *out borrows the array / object from obj. */
int kvf_json_opt_array(const json_t *obj, const char *key, const json_t **out);
int kvf_json_opt_object(const json_t *obj, const char *key, const json_t **out);

/* The field named by the last failing getter on this thread ("" if none). */
const char *kvf_json_bad_param(void);

/* For checks the getters cannot express: records param as the bad field and
 * the message (kvf_errmsg()); returns KVF_E_INVAL. */
int kvf_json_fail(const char *param, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends compact JSON (jansson's JSON_COMPACT) to out. */
int kvf_json_dump(const json_t *v, kvf_buf *out);

/* Appends {"error":{"message":...,"type":...,"param":...,"code":...}};
 * param and code may be NULL (written as null). */
int kvf_json_openai_error(kvf_buf *out, const char *message, const char *type, const char *param,
			  const char *code);

#endif
