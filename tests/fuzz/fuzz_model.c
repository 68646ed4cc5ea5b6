/*
 * Fuzz target for the model-file parsers (engine/model.c, engine/safetensors.c):
 * a model directory is untrusted input. The first byte picks the parser:
 * even -> config.json text (kvf_model_config_parse, then the RoPE table),
 * odd -> a safetensors image (kvf_st_parse, then every tensor's bytes read).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"
#include "engine/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 1) {
		kvf_st_file f;
		if (kvf_st_parse(data + 1, size - 1, "fuzz.safetensors", &f) == 0) {
			volatile uint8_t sink = 0;
			for (int i = 0; i < f.n_tensors; i++)
				for (size_t j = 0; j < f.tensors[i].nbytes; j++)
					sink ^= ((const uint8_t *)f.tensors[i].data)[j];
			(void)sink;
			kvf_st_close(&f);
		}
		return 0;
	}
	char *text = malloc(size);
	if (!text)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = 0;
	kvf_model_config cfg;
	if (kvf_model_config_parse(text, "fuzz/config.json", &cfg) == 0 && cfg.head_dim <= 65536) {
		float *inv = malloc((size_t)cfg.head_dim / 2 * sizeof *inv + 1);
		if (inv)
			kvf_model_rope_init(&cfg, inv);
		free(inv);
	}
	free(text);
	return 0;
}
