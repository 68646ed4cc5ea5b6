/*
 * Fuzz target: configuration input. The first byte picks the mode:
 * even: every line of the rest is one `-o section.key=value` override;
 * odd: the rest is a whole libconfig file. A section with every key type is
 * registered. Properties: no crash or leak; after any sequence, printing the
 * configuration and loading the print back into a fresh config succeeds and
 * prints identically (the printer and the parser agree).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_config.h"

struct fz {
	char *s;
	int64_t i;
	double d;
	int b;
	int e;
	uint64_t size;
	uint64_t dur;
	kvf_strlist l;
};

static const kvf_cfg_key keys[] = {
	KVF_CFG_KEY(struct fz, s, STRING, "x", 0, 0, NULL, "string"),
	KVF_CFG_KEY(struct fz, i, INT, "5", -1000000, 1000000, NULL, "int"),
	KVF_CFG_KEY(struct fz, d, DOUBLE, "0.5", -1e9, 1e9, NULL, "double"),
	KVF_CFG_KEY(struct fz, b, BOOL, "true", 0, 0, NULL, "bool"),
	KVF_CFG_KEY(struct fz, e, ENUM, "b", 0, 0, "a|b|c", "enum"),
	KVF_CFG_KEY(struct fz, size, SIZE, "1MiB", 0, 0, NULL, "size"),
	KVF_CFG_KEY(struct fz, dur, DURATION, "5s", 0, 0, NULL, "duration"),
	KVF_CFG_KEY(struct fz, l, STRLIST, "p,q", 0, 0, NULL, "list"),
};
static const kvf_cfg_section sec = { "gateway", "fuzz", keys, KVF_CFG_NKEYS(keys), NULL, sizeof(struct fz) };

static kvf_config *fresh(struct fz *st)
{
	kvf_config *c;
	memset(st, 0, sizeof(*st));
	if (kvf_config_new(&c))
		abort();
	if (kvf_config_add(c, &sec, st))
		abort();
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	struct fz st, st2;
	kvf_config *c = fresh(&st);
	char *text = malloc(size);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	if (data[0] & 1) {
		kvf_config_load_string(c, text, "fuzz");
	} else {
		char *save = NULL;
		for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
			kvf_config_set(c, line, "-o");
	}
	free(text);

	kvf_buf p1 = KVF_BUF_INIT, p2 = KVF_BUF_INIT;
	kvf_config_print(c, &p1);
	kvf_config *c2 = fresh(&st2);
	if (kvf_config_load_string(c2, p1.data, "printed") != 0)
		abort(); /* the printer wrote something the parser refuses */
	kvf_config_print(c2, &p2);
	if (p1.len != p2.len || memcmp(p1.data, p2.data, p1.len) != 0)
		abort(); /* a value changed across print -> parse */
	kvf_buf_free(&p1);
	kvf_buf_free(&p2);
	kvf_config_destroy(c2);
	kvf_config_destroy(c);
	return 0;
}
