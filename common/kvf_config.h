/*
 * kvf_config.h: configuration declared once, in tables.
 *
 * Each component declares its keys in a kvf_cfg_section table (name, type,
 * default, bounds, help) bound to the fields of its own config struct. The
 * table drives everything: defaults, parsing a libconfig file, `-o
 * section.key=value` overrides, validation with file:line errors,
 * `--print-config` (a re-loadable file with the help as comments) and
 * docs/config.md.
 *
 * One file may hold every component's section; a daemon registers the
 * sections it uses and skips the sections of other components, but a
 * section name no component knows (a typo) is an error.
 *
 * Values:
 *   BOOL      int       true/false (file); true|false|yes|no|on|off|1|0 (-o)
 *   INT       int64_t   integer within [min, max]
 *   DOUBLE    double    number within [min, max]
 *   STRING    char *    owned by the config object
 *   ENUM      int       index into choices "a|b|c"; written as the name
 *   SIZE      uint64_t  bytes: integer or "64KiB", "16MiB", "1GiB", "4k", "2M"
 *   DURATION  uint64_t  milliseconds: integer (ms) or "250ms", "5s", "2m", "1h"
 *   STRLIST   kvf_strlist  ["a", "b"] (file) or "a,b" (-o)
 * Bounds apply to INT, DOUBLE, SIZE (bytes) and DURATION (ms) when min < max.
 */
#ifndef KVF_CONFIG_H
#define KVF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvf_buf.h"

typedef enum kvf_cfg_type {
	KVF_CFG_BOOL,
	KVF_CFG_INT,
	KVF_CFG_DOUBLE,
	KVF_CFG_STRING,
	KVF_CFG_ENUM,
	KVF_CFG_SIZE,
	KVF_CFG_DURATION,
	KVF_CFG_STRLIST,
} kvf_cfg_type;

typedef struct kvf_strlist {
	char **v;
	size_t n;
} kvf_strlist;

typedef struct kvf_cfg_key {
	const char *name;
	kvf_cfg_type type;
	size_t offset;       /* offsetof(the section struct, field) */
	const char *def;     /* default in -o syntax; NULL: empty string/list, 0 */
	double min, max;     /* inclusive bounds, used when min < max */
	const char *choices; /* ENUM: "error|warn|info" */
	const char *help;
} kvf_cfg_key;

typedef struct kvf_cfg_section {
	const char *name; /* "gateway" */
	const char *help;
	const kvf_cfg_key *keys;
	size_t nkeys;
	/* Optional cross-key check after loading; return kvf_errf(...). */
	int (*validate)(const void *storage);
	/* sizeof the bound struct, so generic tools (kvf-config) can check a
	 * whole file without knowing the type. */
	size_t storage_size;
} kvf_cfg_section;

/* Declares one key of struct TYPE: KVF_CFG_KEY(struct gw_cfg, port, INT, "8080", 1, 65535, NULL, "help") */
#define KVF_CFG_KEY(TYPE, field, kind, def, min, max, choices, help) \
	{ #field, KVF_CFG_##kind, offsetof(TYPE, field), def, min, max, choices, help }

#define KVF_CFG_NKEYS(tbl) (sizeof(tbl) / sizeof((tbl)[0]))

typedef struct kvf_config kvf_config;

int kvf_config_new(kvf_config **out);
/* Frees the strings and lists it stored in every registered struct. NULL ok. */
void kvf_config_destroy(kvf_config *cfg);

/* Registers a section bound to storage (borrowed for the config's life) and
 * writes every key's default into it. */
int kvf_config_add(kvf_config *cfg, const kvf_cfg_section *sec, void *storage);

/* Reads a libconfig file. Errors name file:line and section.key. */
int kvf_config_load_file(kvf_config *cfg, const char *path);
/* Same from a string (origin names it in errors). */
int kvf_config_load_string(kvf_config *cfg, const char *text, const char *origin);

/* Applies "section.key=value" (origin, e.g. "-o", names it in errors). */
int kvf_config_set(kvf_config *cfg, const char *assignment, const char *origin);

/* Runs the sections' validate hooks. */
int kvf_config_validate(kvf_config *cfg);

/* Effective configuration as a libconfig file with help comments. */
int kvf_config_print(const kvf_config *cfg, kvf_buf *out);
/* The same with credentials (secret, *_secret, api_keys) shown as
 * "<redacted>" when redact is set: for `show config` on the admin socket. */
int kvf_config_print_redacted(const kvf_config *cfg, kvf_buf *out, int redact);

/* One key's current value in -o syntax ("8080", "5s", "a,b"). */
int kvf_config_format_value(const kvf_cfg_key *key, const void *storage, kvf_buf *out);

/* Markdown reference of sections (for docs/config.md). */
int kvf_config_doc(const kvf_cfg_section *const *secs, size_t n, kvf_buf *out);

/* Parses a SIZE or DURATION text; exposed for tools and tests. */
int kvf_config_parse_size(const char *s, uint64_t *bytes);
int kvf_config_parse_duration(const char *s, uint64_t *ms);

/* Names of every section some component defines; a file section that is
 * neither registered nor in this list is an error (a typo). */
extern const char *const kvf_config_known_sections[];

/*
 * Command line of every daemon: -c FILE, -o section.key=value (repeatable),
 * --print-config, --check, --version, -h/--help. Loads FILE (if given),
 * applies the overrides in order, validates. Returns 0 when the daemon should
 * run, or 1 when the process should exit now with *exit_code: 2 for any
 * configuration error (printed to stderr), 0 after --help, --version,
 * --check or --print-config. prog names the daemon in messages; usage_extra
 * is appended to --help (NULL ok).
 */
int kvf_config_cli(kvf_config *cfg, const char *prog, int argc, char **argv, const char *usage_extra,
		   int *exit_code);

#endif
