/*
 * json.c: validating getters and writers over jansson. Messages follow the
 * OpenAI API's tone: "'max_tokens' must be an integer between 1 and 4096".
 */
#include "common/kvf_json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/kvf_err.h"

static _Thread_local char bad_param[64];

int kvf_json_fail(const char *key, const char *fmt, ...)
{
	snprintf(bad_param, sizeof(bad_param), "%s", key);
	va_list ap;
	va_start(ap, fmt);
	kvf_verrf(KVF_E_INVAL, fmt, ap);
	va_end(ap);
	return KVF_E_INVAL;
}

#define bad kvf_json_fail

const char *kvf_json_bad_param(void)
{
	return bad_param;
}

int kvf_json_parse_object(const char *buf, size_t len, json_t **out)
{
	json_t *v;
	if (kvf_json_load(buf, len, &v))
		return KVF_E_PARSE;
	if (!json_is_object(v)) {
		json_decref(v);
		return kvf_errf(KVF_E_PARSE, "expected a JSON object");
	}
	*out = v;
	return 0;
}

static const json_t *field(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return (v && !json_is_null(v)) ? v : NULL;
}

int kvf_json_opt_int(const json_t *obj, const char *key, int64_t min, int64_t max, int64_t *out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	int64_t x;
	if (json_is_integer(v)) {
		x = json_integer_value(v);
	} else if (json_is_real(v) && floor(json_real_value(v)) == json_real_value(v) &&
		   fabs(json_real_value(v)) < 9e15) {
		x = (int64_t)json_real_value(v); /* 16.0 is an integer to most clients */
	} else {
		return bad(key, "'%s' must be an integer", key);
	}
	if (x < min || x > max)
		return bad(key, "'%s' must be an integer between %lld and %lld, got %lld", key,
			   (long long)min, (long long)max, (long long)x);
	*out = x;
	return 0;
}

int kvf_json_req_int(const json_t *obj, const char *key, int64_t min, int64_t max, int64_t *out)
{
	if (!field(obj, key))
		return bad(key, "'%s' is required", key);
	return kvf_json_opt_int(obj, key, min, max, out);
}

int kvf_json_opt_double(const json_t *obj, const char *key, double min, double max, double *out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	if (!json_is_number(v))
		return bad(key, "'%s' must be a number", key);
	double x = json_number_value(v);
	if (!(x >= min && x <= max))
		return bad(key, "'%s' must be between %g and %g, got %g", key, min, max, x);
	*out = x;
	return 0;
}

int kvf_json_opt_bool(const json_t *obj, const char *key, int *out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(key, "'%s' must be a boolean", key);
	*out = json_is_true(v);
	return 0;
}

int kvf_json_opt_string(const json_t *obj, const char *key, const char **out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	if (!json_is_string(v))
		return bad(key, "'%s' must be a string", key);
	*out = json_string_value(v);
	return 0;
}

int kvf_json_req_string(const json_t *obj, const char *key, const char **out)
{
	if (!field(obj, key))
		return bad(key, "'%s' is required", key);
	return kvf_json_opt_string(obj, key, out);
}

int kvf_json_opt_array(const json_t *obj, const char *key, const json_t **out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	if (!json_is_array(v))
		return bad(key, "'%s' must be an array", key);
	*out = v;
	return 0;
}

int kvf_json_opt_object(const json_t *obj, const char *key, const json_t **out)
{
	const json_t *v = field(obj, key);
	if (!v)
		return 0;
	if (!json_is_object(v))
		return bad(key, "'%s' must be an object", key);
	*out = v;
	return 0;
}

static int dump_cb(const char *data, size_t len, void *ud)
{
	return kvf_buf_append(ud, data, len) ? -1 : 0;
}

int kvf_json_dump(const json_t *v, kvf_buf *out)
{
	if (json_dump_callback(v, dump_cb, out, JSON_COMPACT | JSON_ENCODE_ANY) != 0)
		return kvf_errf(out->oom ? KVF_E_NOMEM : KVF_E_INVAL, "cannot encode JSON");
	return 0;
}

static void put_str_or_null(kvf_buf *out, const char *s)
{
	if (s)
		kvf_buf_put_json_str(out, s, strlen(s));
	else
		kvf_buf_puts(out, "null");
}

int kvf_json_openai_error(kvf_buf *out, const char *message, const char *type, const char *param,
			  const char *code)
{
	kvf_buf_puts(out, "{\"error\":{\"message\":");
	put_str_or_null(out, message ? message : "");
	kvf_buf_puts(out, ",\"type\":");
	put_str_or_null(out, type ? type : "invalid_request_error");
	kvf_buf_puts(out, ",\"param\":");
	put_str_or_null(out, param && *param ? param : NULL);
	kvf_buf_puts(out, ",\"code\":");
	put_str_or_null(out, code);
	kvf_buf_puts(out, "}}");
	return out->oom ? KVF_E_NOMEM : 0;
}
