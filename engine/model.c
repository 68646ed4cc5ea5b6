/*
 * model.c: a Hugging Face model directory -> kvf_model.
 *
 * config.json gives the architecture and shape; the weights come from
 * model.safetensors or the shards named by model.safetensors.index.json, all
 * mmapped (safetensors.c). Every tensor the architecture needs is looked up
 * by its HF name and its dtype and shape checked, so a wrong or truncated
 * model fails here with the tensor or field named, never later with garbage.
 *
 * Supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (qkv
 * bias), Qwen3ForCausalLM (q_norm/k_norm, explicit head_dim); GQA/MQA; tied
 * embeddings; RoPE default, linear and llama3 scaling, read from either
 * `rope_theta` + `rope_scaling` or the newer `rope_parameters`.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/dtype.h"
#include "engine/internal.h"
#include "engine/safetensors.h"

static const struct {
	const char *name;
	int arch;
} archs[] = {
	{"LlamaForCausalLM", KVF_ARCH_LLAMA},
	{"MistralForCausalLM", KVF_ARCH_MISTRAL},
	{"Qwen2ForCausalLM", KVF_ARCH_QWEN2},
	{"Qwen3ForCausalLM", KVF_ARCH_QWEN3},
};

static int cfg_int(json_t *root, const char *what, const char *key, bool required, int def,
		   int min, int *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v)) {
		if (required)
			return kvf_errf(KVF_E_MODEL, "%s: missing field '%s'", what, key);
		*out = def;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > INT_MAX)
		return kvf_errf(KVF_E_MODEL, "%s: field '%s' must be an integer >= %d", what, key,
				min);
	*out = (int)json_integer_value(v);
	return 0;
}

static int cfg_num(json_t *obj, const char *what, const char *key, bool required, double def,
		   double *out)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v)) {
		if (required)
			return kvf_errf(KVF_E_MODEL, "%s: missing field '%s'", what, key);
		*out = def;
		return 0;
	}
	if (!json_is_number(v))
		return kvf_errf(KVF_E_MODEL, "%s: field '%s' must be a number", what, key);
	*out = json_number_value(v);
	return 0;
}

static bool cfg_bool(json_t *root, const char *key, bool def)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v))
		return def;
	return json_is_true(v);
}

/* Reads the RoPE settings from either config form. */
static int cfg_rope(json_t *root, const char *what, kvf_model_config *c)
{
	int rc;
	json_t *rp = json_object_get(root, "rope_parameters");
	const char *field = "rope_parameters";
	json_t *params = NULL;
	if (json_is_object(rp)) {
		/* transformers 5: one object, rope_theta inside */
		params = rp;
		if ((rc = cfg_num(rp, what, "rope_theta", false, 10000.0, &c->rope_theta)))
			return rc;
	} else {
		field = "rope_scaling";
		if ((rc = cfg_num(root, what, "rope_theta", false, 10000.0, &c->rope_theta)))
			return rc;
		json_t *rs = json_object_get(root, "rope_scaling");
		if (rs && !json_is_null(rs)) {
			if (!json_is_object(rs))
				return kvf_errf(KVF_E_MODEL, "%s: '%s' must be an object", what,
						field);
			params = rs;
		}
	}
	if (!(c->rope_theta > 0))
		return kvf_errf(KVF_E_MODEL, "%s: rope_theta must be > 0", what);
	c->rope_type = KVF_ROPE_DEFAULT;
	c->rope_factor = 1.0;
	if (!params)
		return 0;
	json_t *t = json_object_get(params, "rope_type");
	if (!t)
		t = json_object_get(params, "type");
	const char *type = json_is_string(t) ? json_string_value(t) : "default";
	if (!strcmp(type, "default"))
		return 0;
	if (!strcmp(type, "linear")) {
		c->rope_type = KVF_ROPE_LINEAR;
		if ((rc = cfg_num(params, what, "factor", true, 1.0, &c->rope_factor)))
			return rc;
		if (!(c->rope_factor > 0))
			return kvf_errf(KVF_E_MODEL, "%s: %s.factor must be > 0", what, field);
		return 0;
	}
	if (!strcmp(type, "llama3")) {
		c->rope_type = KVF_ROPE_LLAMA3;
		if ((rc = cfg_num(params, what, "factor", true, 8.0, &c->rope_factor)) ||
		    (rc = cfg_num(params, what, "low_freq_factor", true, 1.0,
				  &c->rope_low_freq_factor)) ||
		    (rc = cfg_num(params, what, "high_freq_factor", true, 4.0,
				  &c->rope_high_freq_factor)) ||
		    (rc = cfg_num(params, what, "original_max_position_embeddings", true, 8192,
				  &c->rope_orig_max_pos)))
			return rc;
		if (!(c->rope_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
		    !(c->rope_low_freq_factor > 0) || !(c->rope_orig_max_pos > 0))
			return kvf_errf(KVF_E_MODEL, "%s: %s: inconsistent llama3 factors", what,
					field);
		return 0;
	}
	return kvf_errf(KVF_E_UNSUPPORTED,
			"%s: %s.rope_type '%s' is not supported (default, linear, llama3)", what,
			field, type);
}

int kvf_model_config_parse(const char *text, const char *what, kvf_model_config *c)
{
	int rc;
	memset(c, 0, sizeof *c);
	json_error_t jerr;
	json_t *root = json_loads(text, 0, &jerr);
	if (!root || !json_is_object(root)) {
		rc = kvf_errf(KVF_E_MODEL, "%s:%d: not a JSON object: %s", what, jerr.line,
			      root ? "" : jerr.text);
		goto out;
	}
	json_t *ar = json_object_get(root, "architectures");
	json_t *a0 = json_is_array(ar) ? json_array_get(ar, 0) : NULL;
	if (!json_is_string(a0)) {
		rc = kvf_errf(KVF_E_MODEL, "%s: missing field 'architectures'", what);
		goto out;
	}
	for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
		if (!strcmp(json_string_value(a0), archs[i].name))
			c->arch = archs[i].arch;
	snprintf(c->arch_name, sizeof c->arch_name, "%s", json_string_value(a0));
	if (!c->arch) {
		rc = kvf_errf(KVF_E_UNSUPPORTED,
			      "%s: architectures[0] '%s' is not supported (LlamaForCausalLM, "
			      "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)",
			      what, json_string_value(a0));
		goto out;
	}
	if ((rc = cfg_int(root, what, "hidden_size", true, 0, 1, &c->hidden)) ||
	    (rc = cfg_int(root, what, "intermediate_size", true, 0, 1, &c->ffn)) ||
	    (rc = cfg_int(root, what, "num_hidden_layers", true, 0, 1, &c->n_layers)) ||
	    (rc = cfg_int(root, what, "num_attention_heads", true, 0, 1, &c->n_heads)) ||
	    (rc = cfg_int(root, what, "vocab_size", true, 0, 1, &c->vocab)) ||
	    (rc = cfg_int(root, what, "num_key_value_heads", false, c->n_heads, 1,
			  &c->n_kv_heads)) ||
	    (rc = cfg_int(root, what, "head_dim", false, c->hidden / c->n_heads, 1,
			  &c->head_dim)) ||
	    (rc = cfg_int(root, what, "max_position_embeddings", false, 2048, 1, &c->max_pos)))
		goto out;
	if (c->n_heads % c->n_kv_heads) {
		rc = kvf_errf(KVF_E_MODEL,
			      "%s: num_attention_heads (%d) is not a multiple of "
			      "num_key_value_heads (%d)",
			      what, c->n_heads, c->n_kv_heads);
		goto out;
	}
	if (c->head_dim % 2) {
		rc = kvf_errf(KVF_E_MODEL, "%s: head_dim %d must be even", what, c->head_dim);
		goto out;
	}
	double eps;
	if ((rc = cfg_num(root, what, "rms_norm_eps", false, 1e-6, &eps)))
		goto out;
	c->norm_eps = (float)eps;
	json_t *act = json_object_get(root, "hidden_act");
	if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
		rc = kvf_errf(KVF_E_UNSUPPORTED, "%s: hidden_act must be \"silu\"", what);
		goto out;
	}
	if (cfg_bool(root, "mlp_bias", false)) {
		rc = kvf_errf(KVF_E_UNSUPPORTED, "%s: mlp_bias true is not supported", what);
		goto out;
	}
	json_t *lt = json_object_get(root, "layer_types");
	if (json_is_array(lt)) {
		size_t i;
		json_t *x;
		json_array_foreach(lt, i, x)
		{
			if (!json_is_string(x) || strcmp(json_string_value(x), "full_attention")) {
				rc = kvf_errf(KVF_E_UNSUPPORTED,
					      "%s: layer_types[%zu]: only full_attention is "
					      "supported",
					      what, i);
				goto out;
			}
		}
	}
	/* A sliding window narrower than the context changes attention; keep
	 * results exact by capping the context at the window instead. */
	json_t *sw = json_object_get(root, "sliding_window");
	bool sw_on = c->arch == KVF_ARCH_MISTRAL || cfg_bool(root, "use_sliding_window", false);
	if (sw_on && json_is_integer(sw) && json_integer_value(sw) > 0 &&
	    json_integer_value(sw) < c->max_pos)
		c->max_pos = (int)json_integer_value(sw);

	c->tie_embeddings = cfg_bool(root, "tie_word_embeddings", false);
	c->qkv_bias = c->arch == KVF_ARCH_QWEN2 || cfg_bool(root, "attention_bias", false);
	c->o_bias = c->arch != KVF_ARCH_QWEN2 && cfg_bool(root, "attention_bias", false);
	c->qk_norm = c->arch == KVF_ARCH_QWEN3;
	if ((rc = cfg_rope(root, what, c)))
		goto out;

	json_t *dt = json_object_get(root, "dtype");
	if (!json_is_string(dt))
		dt = json_object_get(root, "torch_dtype");
	c->param_dtype = KVF_DTYPE_AUTO;
	if (json_is_string(dt) && kvf_dtype_parse(json_string_value(dt), &c->param_dtype))
		c->param_dtype = KVF_DTYPE_AUTO;
	kvf_err_clear();

	json_t *bos = json_object_get(root, "bos_token_id");
	c->bos_id = json_is_integer(bos) ? (uint32_t)json_integer_value(bos) : KVF_TOKEN_NONE;
	json_t *eos = json_object_get(root, "eos_token_id");
	if (json_is_integer(eos)) {
		c->eos_ids[c->n_eos++] = (uint32_t)json_integer_value(eos);
	} else if (json_is_array(eos)) {
		size_t i;
		json_t *x;
		json_array_foreach(eos, i, x) if (json_is_integer(x) && c->n_eos < 8) c
			->eos_ids[c->n_eos++] = (uint32_t)json_integer_value(x);
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

int kvf_model_rope_init(const kvf_model_config *c, float *inv_freq)
{
	int half = c->head_dim / 2;
	for (int i = 0; i < half; i++) {
		/* HF: 1 / base ** (arange(0, dim, 2).float() / dim), in float32 */
		float expo = (float)(2 * i) / (float)c->head_dim;
		float f = (float)(1.0 / pow(c->rope_theta, (double)expo));
		if (c->rope_type == KVF_ROPE_LINEAR) {
			f = (float)(f / c->rope_factor);
		} else if (c->rope_type == KVF_ROPE_LLAMA3) {
			double low_wl = c->rope_orig_max_pos / c->rope_low_freq_factor;
			double high_wl = c->rope_orig_max_pos / c->rope_high_freq_factor;
			double wl = 2.0 * M_PI / f;
			double g = f;
			if (wl > low_wl)
				g = f / c->rope_factor;
			else if (!(wl < high_wl)) {
				double smooth = (c->rope_orig_max_pos / wl - c->rope_low_freq_factor) /
						(c->rope_high_freq_factor - c->rope_low_freq_factor);
				g = (1 - smooth) * f / c->rope_factor + smooth * f;
			}
			f = (float)g;
		}
		/* transformers keeps inv_freq as a module buffer, so a model loaded
		 * in its checkpoint dtype (bf16/fp16) computes RoPE from
		 * frequencies rounded to that dtype; the reference logits do too
		 * (max error 1e-6 with the rounding, 3e-3 without). */
		if (!c->rope_exact && c->param_dtype == KVF_DTYPE_BF16)
			f = kvf_bf16_to_f32(kvf_f32_to_bf16(f));
		else if (!c->rope_exact && c->param_dtype == KVF_DTYPE_F16)
			f = kvf_f16_to_f32(kvf_f32_to_f16(f));
		inv_freq[i] = f;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */

static int read_file(const char *path, char **out)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return kvf_errf(kvf_err_from_errno(errno), "%s: %s", path, strerror(errno));
	if (fseek(fp, 0, SEEK_END) < 0) {
		fclose(fp);
		return kvf_errf(KVF_E_IO, "%s: cannot seek", path);
	}
	long n = ftell(fp);
	rewind(fp);
	if (n < 0 || n > (64l << 20)) {
		fclose(fp);
		return kvf_errf(KVF_E_TOOBIG, "%s: unexpected size", path);
	}
	char *buf = kvf_malloc((size_t)n + 1);
	if (!buf) {
		fclose(fp);
		return KVF_E_NOMEM;
	}
	if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
		kvf_free(buf);
		fclose(fp);
		return kvf_errf(KVF_E_IO, "%s: short read", path);
	}
	buf[n] = 0;
	fclose(fp);
	*out = buf;
	return 0;
}

static const kvf_st_tensor *find_tensor(const kvf_model *m, const char *name)
{
	for (int f = 0; f < m->n_files; f++)
		for (int i = 0; i < m->files[f].n_tensors; i++)
			if (!strcmp(m->files[f].tensors[i].name, name))
				return &m->files[f].tensors[i];
	return NULL;
}

/* Binds tensor `name` with shape [rows][cols] (cols 0: 1-D of rows). */
static int bind(kvf_model *m, kvf_tensor *t, const char *name, int64_t rows, int64_t cols,
		bool optional)
{
	const kvf_st_tensor *st = find_tensor(m, name);
	memset(t, 0, sizeof *t);
	if (!st) {
		if (optional)
			return 0;
		return kvf_errf(KVF_E_MODEL, "model: missing tensor %s", name);
	}
	if (st->dtype == KVF_DTYPE_AUTO)
		return kvf_errf(KVF_E_UNSUPPORTED,
				"model: tensor %s has dtype %s (supported: F32, BF16, F16)", name,
				st->st_dtype);
	bool ok = cols ? (st->ndim == 2 && st->shape[0] == rows && st->shape[1] == cols)
		       : (st->ndim == 1 && st->shape[0] == rows);
	if (!ok) {
		char got[64] = "";
		size_t o = 0;
		for (int d = 0; d < st->ndim && o < sizeof got - 24; d++)
			o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", d ? ", " : "",
					      (long long)st->shape[d]);
		if (cols)
			return kvf_errf(KVF_E_MODEL,
					"model: tensor %s has shape [%s], expected [%lld, %lld]",
					name, got, (long long)rows, (long long)cols);
		return kvf_errf(KVF_E_MODEL, "model: tensor %s has shape [%s], expected [%lld]",
				name, got, (long long)rows);
	}
	t->name = st->name;
	t->data = st->data;
	t->dtype = st->dtype;
	t->rows = cols ? rows : 1;
	t->cols = cols ? cols : rows;
	m->n_params += (size_t)(t->rows * t->cols);
	m->weight_bytes += (size_t)(t->rows * t->cols) * kvf_dtype_size(t->dtype);
	return 0;
}

static int open_files(kvf_model *m, const char *dir)
{
	char path[4096];
	int rc;
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	char *idx = NULL;
	rc = read_file(path, &idx);
	if (rc == KVF_E_NOTFOUND) {
		/* single file */
		m->files = kvf_calloc(1, sizeof *m->files);
		if (!m->files)
			return KVF_E_NOMEM;
		snprintf(path, sizeof path, "%s/model.safetensors", dir);
		if ((rc = kvf_st_open(path, &m->files[0]))) {
			if (rc == KVF_E_NOTFOUND)
				return kvf_errf(KVF_E_NOTFOUND,
						"%s: no model.safetensors nor "
						"model.safetensors.index.json",
						dir);
			return rc;
		}
		m->n_files = 1;
		return 0;
	}
	if (rc)
		return rc;
	json_error_t jerr;
	json_t *root = json_loads(idx, 0, &jerr);
	kvf_free(idx);
	json_t *wm = root ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(wm)) {
		json_decref(root);
		return kvf_errf(KVF_E_MODEL, "%s: missing object 'weight_map'", path);
	}
	/* distinct shard names, in first-seen order */
	const char **shards = kvf_calloc(json_object_size(wm) + 1, sizeof *shards);
	int n = 0;
	if (!shards) {
		json_decref(root);
		return KVF_E_NOMEM;
	}
	const char *k;
	json_t *v;
	json_object_foreach(wm, k, v)
	{
		if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
			rc = kvf_errf(KVF_E_MODEL, "%s: weight_map.%s: bad shard name", path, k);
			goto out;
		}
		int j;
		for (j = 0; j < n; j++)
			if (!strcmp(shards[j], json_string_value(v)))
				break;
		if (j == n)
			shards[n++] = json_string_value(v);
	}
	m->files = kvf_calloc((size_t)n + 1, sizeof *m->files);
	if (!m->files) {
		rc = KVF_E_NOMEM;
		goto out;
	}
	for (int j = 0; j < n; j++) {
		snprintf(path, sizeof path, "%s/%s", dir, shards[j]);
		if ((rc = kvf_st_open(path, &m->files[j])))
			goto out;
		m->n_files++;
	}
	rc = 0;
out:
	kvf_free(shards);
	json_decref(root);
	return rc;
}

int kvf_model_load(const char *dir, bool rope_exact, kvf_model **out)
{
	int rc;
	char path[4096];
	char *text = NULL;
	kvf_model *m = kvf_calloc(1, sizeof *m);
	if (!m)
		return KVF_E_NOMEM;
	snprintf(path, sizeof path, "%s/config.json", dir);
	if ((rc = read_file(path, &text)))
		goto err;
	rc = kvf_model_config_parse(text, path, &m->cfg);
	kvf_free(text);
	if (rc)
		goto err;
	m->cfg.rope_exact = rope_exact;
	if ((rc = open_files(m, dir)))
		goto err;

	kvf_model_config *c = &m->cfg;
	int64_t H = c->hidden, F = c->ffn, V = c->vocab;
	int64_t QD = (int64_t)c->n_heads * c->head_dim, KD = (int64_t)c->n_kv_heads * c->head_dim;
	m->layers = kvf_calloc((size_t)c->n_layers, sizeof *m->layers);
	m->rope_inv_freq = kvf_calloc((size_t)c->head_dim / 2, sizeof(float));
	if (!m->layers || !m->rope_inv_freq) {
		rc = KVF_E_NOMEM;
		goto err;
	}
	kvf_model_rope_init(c, m->rope_inv_freq);
	if ((rc = bind(m, &m->embed, "model.embed_tokens.weight", V, H, false)) ||
	    (rc = bind(m, &m->final_norm, "model.norm.weight", H, 0, false)))
		goto err;
	if (!find_tensor(m, "lm_head.weight") && !c->tie_embeddings) {
		rc = kvf_errf(KVF_E_MODEL,
			      "model: missing tensor lm_head.weight (and tie_word_embeddings "
			      "is false)");
		goto err;
	}
	if (c->tie_embeddings || !find_tensor(m, "lm_head.weight")) {
		m->lm_head = m->embed;
		m->weight_bytes += (size_t)(V * H) * kvf_dtype_size(m->embed.dtype);
	} else if ((rc = bind(m, &m->lm_head, "lm_head.weight", V, H, false))) {
		goto err;
	}
	m->wdtype = m->embed.dtype;
	/* a decode step reads one embedding row, not the table */
	m->weight_bytes -= (size_t)(V * H) * kvf_dtype_size(m->embed.dtype);
	m->weight_bytes += (size_t)H * kvf_dtype_size(m->embed.dtype);
	for (int l = 0; l < c->n_layers; l++) {
		kvf_layer_weights *L = &m->layers[l];
		char n[160];
#define B(field, suffix, rows, cols, opt)                                            \
	do {                                                                          \
		snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix);               \
		if ((rc = bind(m, &L->field, n, rows, cols, opt)))                    \
			goto err;                                                     \
	} while (0)
		B(attn_norm, "input_layernorm.weight", H, 0, false);
		B(wq, "self_attn.q_proj.weight", QD, H, false);
		B(wk, "self_attn.k_proj.weight", KD, H, false);
		B(wv, "self_attn.v_proj.weight", KD, H, false);
		B(wo, "self_attn.o_proj.weight", H, QD, false);
		if (c->qkv_bias) {
			B(bq, "self_attn.q_proj.bias", QD, 0, false);
			B(bk, "self_attn.k_proj.bias", KD, 0, false);
			B(bv, "self_attn.v_proj.bias", KD, 0, false);
		}
		if (c->o_bias)
			B(bo, "self_attn.o_proj.bias", H, 0, false);
		if (c->qk_norm) {
			B(q_norm, "self_attn.q_norm.weight", c->head_dim, 0, false);
			B(k_norm, "self_attn.k_norm.weight", c->head_dim, 0, false);
		}
		B(ffn_norm, "post_attention_layernorm.weight", H, 0, false);
		B(w_gate, "mlp.gate_proj.weight", F, H, false);
		B(w_up, "mlp.up_proj.weight", F, H, false);
		B(w_down, "mlp.down_proj.weight", H, F, false);
#undef B
	}
	*out = m;
	return 0;
err:
	kvf_model_free(m);
	return rc;
}

void kvf_model_free(kvf_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_files; i++)
		kvf_st_close(&m->files[i]);
	kvf_free(m->files);
	kvf_free(m->layers);
	kvf_free(m->rope_inv_freq);
	kvf_free(m);
}
