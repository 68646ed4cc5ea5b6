/*
 * safetensors.h: read-only mapping of one .safetensors file (engine-private).
 */
#ifndef KVF_ENGINE_SAFETENSORS_H
#define KVF_ENGINE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/kvf_engine.h"

typedef struct kvf_st_tensor {
	char *name;
	char st_dtype[16];     /* as written: "BF16", "F32", "I64", ... */
	kvf_dtype dtype;       /* AUTO when the engine cannot compute with it */
	int ndim;
	int64_t shape[4];
	const void *data;      /* into the mapping */
	size_t nbytes;
} kvf_st_tensor;

typedef struct kvf_st_file {
	void *base;
	size_t len;
	kvf_st_tensor *tensors;
	int n_tensors;
} kvf_st_file;

/* Maps path and parses its header; every tensor's bytes lie inside the file. */
int kvf_st_open(const char *path, kvf_st_file *f);

/* Parses a safetensors image in memory (borrowed; tensors point into it).
 * path only names it in errors. kvf_st_close frees the tensor list (and
 * unmaps only what kvf_st_open mapped). */
int kvf_st_parse(const void *buf, size_t len, const char *path, kvf_st_file *f);
void kvf_st_close(kvf_st_file *f);

#endif
