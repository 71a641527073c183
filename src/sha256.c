/*-------------------------------------------------------------------------
 *
 * sha256.c
 *	  SHA-256 (FIPS 180-4) of a buffer in memory, for the event ids silver
 *	  derives (silver.c).
 *
 * PostgreSQL's pg_cryptohash goes through OpenSSL's EVP interface, whose
 * per-call set-up (a context, a digest fetch, a resource owner entry) costs
 * more than hashing the few dozen bytes of a derived id's input; this is
 * the plain algorithm, written from the standard, with no state beyond one
 * call.  Its results are those of SQL's sha256() (test/sql/producers.sql
 * compares them).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

/*
 * The first 32 bits of the fractional parts of the cube roots of the first
 * 64 primes (FIPS 180-4, 4.2.2).
 */
static const uint32 sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
};

/*
 * The initial hash value: the first 32 bits of the fractional parts of the
 * square roots of the first 8 primes (FIPS 180-4, 5.3.3).
 */
static const uint32 sha256_h0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19
};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

/*
 * One round (FIPS 180-4, 6.2.2 step 3) on the working variables a..h: the
 * new a is written to h and the new e to d, so that the next round takes
 * them renamed (h, a, b, ..., g) instead of moving all eight.
 */
#define SHA256_ROUND(a, b, c, d, e, f, g, h, t) \
	do { \
		uint32		t1_ = (h) + (ROTR(e, 6) ^ ROTR(e, 11) ^ ROTR(e, 25)) + \
			(((e) & (f)) ^ (~(e) & (g))) + sha256_k[t] + w[t]; \
		uint32		t2_ = (ROTR(a, 2) ^ ROTR(a, 13) ^ ROTR(a, 22)) + \
			(((a) & (b)) ^ ((a) & (c)) ^ ((b) & (c))); \
		(d) += t1_; \
		(h) = t1_ + t2_; \
	} while (0)

/* Process one 64-byte block into the hash value h. */
static void
Sha256Block(uint32 *h, const uint8 *block)
{
	uint32		w[64];
	uint32		a = h[0],
				b = h[1],
				c = h[2],
				d = h[3],
				e = h[4],
				f = h[5],
				g = h[6],
				hh = h[7];

	for (int t = 0; t < 16; t++)
		w[t] = ((uint32) block[4 * t] << 24) | ((uint32) block[4 * t + 1] << 16) |
			((uint32) block[4 * t + 2] << 8) | (uint32) block[4 * t + 3];
	for (int t = 16; t < 64; t++)
	{
		uint32		s0 = ROTR(w[t - 15], 7) ^ ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
		uint32		s1 = ROTR(w[t - 2], 17) ^ ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);

		w[t] = s1 + w[t - 7] + s0 + w[t - 16];
	}
	/* eight rounds at a time, the variables renamed instead of moved */
	for (int t = 0; t < 64; t += 8)
	{
		SHA256_ROUND(a, b, c, d, e, f, g, hh, t);
		SHA256_ROUND(hh, a, b, c, d, e, f, g, t + 1);
		SHA256_ROUND(g, hh, a, b, c, d, e, f, t + 2);
		SHA256_ROUND(f, g, hh, a, b, c, d, e, t + 3);
		SHA256_ROUND(e, f, g, hh, a, b, c, d, t + 4);
		SHA256_ROUND(d, e, f, g, hh, a, b, c, t + 5);
		SHA256_ROUND(c, d, e, f, g, hh, a, b, t + 6);
		SHA256_ROUND(b, c, d, e, f, g, hh, a, t + 7);
	}
	h[0] += a;
	h[1] += b;
	h[2] += c;
	h[3] += d;
	h[4] += e;
	h[5] += f;
	h[6] += g;
	h[7] += hh;
}

/* The SHA-256 digest of the len bytes at data, in digest (32 bytes). */
void
Sha256Hash(const void *data, size_t len, uint8 *digest)
{
	const uint8 *p = data;
	uint32		h[8];
	uint8		last[128];
	size_t		rest;
	size_t		nlast;
	uint64		bits = (uint64) len * 8;

	memcpy(h, sha256_h0, sizeof(h));
	for (; len >= 64; p += 64, len -= 64)
		Sha256Block(h, p);

	/* the rest, 0x80, zeros, and the length in bits: one or two blocks */
	rest = len;
	memcpy(last, p, rest);
	last[rest] = 0x80;
	nlast = rest + 1 + 8 <= 64 ? 64 : 128;
	memset(last + rest + 1, 0, nlast - rest - 1 - 8);
	for (int i = 0; i < 8; i++)
		last[nlast - 1 - i] = (uint8) (bits >> (8 * i));
	Sha256Block(h, last);
	if (nlast == 128)
		Sha256Block(h, last + 64);

	for (int i = 0; i < 8; i++)
	{
		digest[4 * i] = (uint8) (h[i] >> 24);
		digest[4 * i + 1] = (uint8) (h[i] >> 16);
		digest[4 * i + 2] = (uint8) (h[i] >> 8);
		digest[4 * i + 3] = (uint8) h[i];
	}
}
