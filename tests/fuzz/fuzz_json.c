/*
 * Fuzz target: kvf_json_load against jansson. For any input, the fast parser
 * and json_loadb(JSON_REJECT_DUPLICATES) must agree on accepting it, and on
 * accepting they must build equal values (json_equal: same types, keys,
 * strings byte for byte, integers exactly, reals by value).
 *
 * One known difference, on purpose: jansson silently drops a NUL byte that
 * follows a number or true/false/null ("[1\0]" parses as [1]); a NUL byte is
 * not JSON and kvf_json_load refuses it wherever it is. Inputs with a NUL
 * byte that only jansson accepts are therefore not a mismatch.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kvf_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *fast = NULL;
	int rc = kvf_json_load((const char *)data, size, &fast);
	json_error_t e;
	json_t *ref = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &e);
	if (rc != 0 && ref && memchr(data, 0, size)) {
		json_decref(ref); /* jansson's NUL quirk (above) */
		return 0;
	}
	if ((rc == 0) != (ref != NULL))
		abort(); /* one accepts what the other refuses */
	if (ref && !json_equal(fast, ref))
		abort(); /* both accept but build different values */
	json_decref(fast);
	json_decref(ref);
	return 0;
}
