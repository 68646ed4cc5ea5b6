/*
 * kvf_alloc.h: the allocator every kvfabric library uses.
 *
 * Normal builds call the C library. Under UNIT_TESTING (the -ut libraries that
 * unit tests link) the calls map to cmocka's test allocator, so a test fails
 * when the code under test leaks, double-frees or overruns a block.
 * Memory handed out by third-party libraries (jansson's json_dumps, libconfig)
 * is released with their own functions or plain free(), never kvf_free().
 */
#ifndef KVF_ALLOC_H
#define KVF_ALLOC_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef UNIT_TESTING
void *_test_malloc(size_t size, const char *file, int line);
void *_test_calloc(size_t n, size_t size, const char *file, int line);
void *_test_realloc(void *ptr, size_t size, const char *file, int line);
void _test_free(void *ptr, const char *file, int line);
#define kvf_malloc(sz) _test_malloc((sz), __FILE__, __LINE__)
#define kvf_calloc(n, sz) _test_calloc((n), (sz), __FILE__, __LINE__)
#define kvf_realloc(p, sz) _test_realloc((p), (sz), __FILE__, __LINE__)
#define kvf_free(p) _test_free((p), __FILE__, __LINE__)
#else
#define kvf_malloc(sz) malloc(sz)
#define kvf_calloc(n, sz) calloc((n), (sz))
#define kvf_realloc(p, sz) realloc((p), (sz))
#define kvf_free(p) free(p)
#endif

/* Duplicates a string with kvf_malloc; NULL in, NULL out. */
static inline char *kvf_strdup(const char *s)
{
	if (!s)
		return NULL;
	size_t n = strlen(s) + 1;
	char *d = kvf_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

/* Duplicates len bytes of s and terminates them. */
static inline char *kvf_strndup(const char *s, size_t len)
{
	char *d = kvf_malloc(len + 1);
	if (d) {
		memcpy(d, s, len);
		d[len] = '\0';
	}
	return d;
}

/* Grows an array to hold at least `need` elements of `elem` bytes. */
static inline int kvf_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 8;
	while (ncap < need)
		ncap *= 2;
	void *p = kvf_realloc(*arr, ncap * elem);
	if (!p)
		return -1;
	*arr = p;
	*cap = ncap;
	return 0;
}

#endif
