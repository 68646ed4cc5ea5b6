/* kvf_version.h: the one place the release version is written. */
#ifndef KVF_VERSION_H
#define KVF_VERSION_H
#define KVF_VERSION "0.1.0"
#endif
