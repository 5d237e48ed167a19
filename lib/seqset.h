/*
 * seqset.h — IMAP sequence sets (RFC 3501 9, "sequence-set"): "1:5,7,9:*",
 * used for message sequence numbers and UIDs alike, parsed into sorted,
 * merged ranges and printed back in the shortest form.
 */
#ifndef ROOST_SEQSET_H
#define ROOST_SEQSET_H

#include <stddef.h>
#include <stdint.h>

#define SEQSET_RANGES_MAX 1024   /* ranges in one parsed set */
#define SEQSET_TEXT_MAX 16384    /* bytes of set text accepted */

struct seq_range {
	uint32_t lo, hi;             /* inclusive, lo <= hi */
};

typedef struct seqset {
	struct seq_range r[SEQSET_RANGES_MAX];
	size_t n;                    /* sorted, non-overlapping, non-adjacent */
} seqset_t;

/*
 * Parses s; "*" stands for star (the largest number in use; a set on an
 * empty mailbox passes 0 and "*" then matches nothing). Numbers are
 * 1..4294967295. 0, or -1 with a short reason in *why.
 */
int seqset_parse(seqset_t *set, const char *s, uint32_t star, const char **why);

/* Adds one range (merging); -1 if the set is full. */
int seqset_add(seqset_t *set, uint32_t lo, uint32_t hi);

/* Writes the set as text ("1:3,5") into out (NUL-terminated, at most cap
 * bytes); the length, or -1 if it did not fit (out then ends at the last
 * whole range). An empty set is "". */
int seqset_format(const seqset_t *set, char *out, size_t cap);

/*
 * A growable list of UIDs (or sequence numbers) added in ascending order,
 * kept as merged ranges with the exact length of its text, so that a
 * caller can cut a reply or split an event before formatting anything.
 * Unlike seqset_t it has no range limit. Zero-initialise it; uidlist_free
 * releases the ranges.
 */
typedef struct uidlist {
	struct seq_range *r;
	size_t n, cap;
	uint64_t count;              /* UIDs added */
	size_t textlen;              /* strlen of the whole list as set text */
} uidlist_t;

/* Adds uid, which must be greater than every UID added before. */
void uidlist_add(uidlist_t *l, uint32_t uid);
/* The first UID of range i (i < l->n). */
uint32_t uidlist_range_lo(const uidlist_t *l, size_t i);
/*
 * Writes whole ranges from range *pos on as set text into out (at most
 * cap bytes with the NUL), stopping before the first one that does not
 * fit; *pos becomes the first range not written. Returns the number of
 * UIDs written. An empty list, or *pos == l->n, writes "".
 */
uint64_t uidlist_format(const uidlist_t *l, size_t *pos, char *out, size_t cap);
void uidlist_free(uidlist_t *l);

#endif
