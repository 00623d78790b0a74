#ifndef BUTTERFLY_CLIBCRYPTO_SHIM_H
#define BUTTERFLY_CLIBCRYPTO_SHIM_H
// Only what the API encryption needs: AES-256-CBC without library padding, SHA-512,
// random IVs and base64 key files.
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#endif
