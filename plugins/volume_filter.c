/*
 * volume_filter.c: see volume_filter.h.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "text.h"
#include "volume_filter.h"

typedef struct st_clause_t {
    size_t first, last; /* its tokens: [first, last] ("not" included) */
    int not_, is_pool;  /* "not" before it; its field is `pool` */
    int ne;             /* its operator is "ne" (LXD 5.0.2 takes any other as "eq") */
    char *value;        /* the value as LXD reads it (quotes removed, the words of a quoted value joined by one space) */
} clause_t;

struct st_gw_vfilter_t {
    char **tokens; /* the words, as Go's strings.Fields splits them */
    size_t num_tokens;
    clause_t *clauses;
    size_t num_clauses;
};

/* the length of the white space (as Go's unicode.IsSpace) at `p`, or 0 */
static size_t space_at(const unsigned char *p)
{
    if (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        return 1;
    if (p[0] == 0xc2 && (p[1] == 0x85 || p[1] == 0xa0)) /* NEL, NO-BREAK SPACE */
        return 2;
    if (p[0] == 0xe1 && p[1] == 0x9a && p[2] == 0x80) /* U+1680 */
        return 3;
    if (p[0] == 0xe2 && p[1] == 0x80 && ((p[2] >= 0x80 && p[2] <= 0x8a) || p[2] == 0xa8 || p[2] == 0xa9 || p[2] == 0xaf))
        return 3;                                     /* U+2000..U+200A, U+2028, U+2029, U+202F */
    if (p[0] == 0xe2 && p[1] == 0x81 && p[2] == 0x9f) /* U+205F */
        return 3;
    if (p[0] == 0xe3 && p[1] == 0x80 && p[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

static void split(gw_vfilter_t *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t cap = 0;
    while (*p != '\0') {
        size_t n;
        if ((n = space_at(p)) != 0) {
            p += n;
            continue;
        }
        const unsigned char *start = p;
        while (*p != '\0' && space_at(p) == 0)
            ++p;
        if (f->num_tokens == cap) {
            cap = cap == 0 ? 8 : cap * 2;
            if ((f->tokens = realloc(f->tokens, cap * sizeof(*f->tokens))) == NULL)
                abort();
        }
        f->tokens[f->num_tokens++] = strndup((const char *)start, p - start);
    }
}

static size_t ends_with_quote(const char *t)
{
    size_t n = strlen(t);
    return n != 0 && t[n - 1] == '"';
}

/* what LXD 5.0.2's filter.Parse does, the same errors in the same order */
static const char *parse(gw_vfilter_t *f)
{
    size_t i = 0, n = f->num_tokens;
    while (i < n) {
        clause_t c = {.first = i};
        if (strcasecmp(f->tokens[i], "not") == 0) {
            c.not_ = 1;
            if (++i == n)
                return "incomplete not clause";
        }
        c.is_pool = strcmp(f->tokens[i], "pool") == 0;
        if (++i == n)
            return "clause has no operator";
        c.ne = strcmp(f->tokens[i], "ne") == 0;
        if (++i == n)
            return "clause has no value";
        const char *v = f->tokens[i];
        if (v[0] == '"') {
            size_t len = strlen(v + 1), cap = len + 1;
            char *value = malloc(cap);
            memcpy(value, v + 1, len + 1);
            for (;;) {
                if (++i == n) {
                    free(value);
                    return "unterminated quote";
                }
                const char *t = f->tokens[i];
                size_t tl = strlen(t) - (ends_with_quote(t) ? 1 : 0);
                if ((value = realloc(value, cap += tl + 1)) == NULL)
                    abort();
                value[len++] = ' ';
                memcpy(value + len, t, tl);
                value[len += tl] = '\0';
                if (ends_with_quote(t))
                    break;
            }
            c.value = value;
        } else {
            c.value = strdup(v);
        }
        c.last = i++;
        f->clauses = realloc(f->clauses, (f->num_clauses + 1) * sizeof(*f->clauses));
        f->clauses[f->num_clauses++] = c;
        if (i < n) {
            if (strcmp(f->tokens[i], "and") != 0 && strcmp(f->tokens[i], "or") != 0)
                return "invalid clause composition";
            if (++i == n)
                return "unterminated compound clause";
        }
    }
    return NULL;
}

gw_vfilter_t *gw_vfilter_parse(const char *s, int *status, char **msg)
{
    gw_vfilter_t *f = calloc(1, sizeof(*f));
    split(f, s);
    const char *err = parse(f);
    if (err != NULL) {
        *status = 500; /* LXD: SmartError of a plain error */
        *msg = gw_text_format("Invalid filter: %s", err);
        gw_vfilter_free(f);
        return NULL;
    }
    for (size_t i = 0; i != f->num_clauses; ++i) {
        const clause_t *c = &f->clauses[i];
        if (c->is_pool && strpbrk(c->value, "\\+*?()|[]{}^$") != NULL) {
            *status = 400;
            *msg = gw_text_format("Invalid filter: the pool is compared by name (\".\" for any one character), "
                                  "other pattern syntax is not supported by this gateway: \"%s\"",
                                  c->value);
            gw_vfilter_free(f);
            return NULL;
        }
    }
    return f;
}

int gw_vfilter_has_pool(const gw_vfilter_t *f)
{
    for (size_t i = 0; i != f->num_clauses; ++i)
        if (f->clauses[i].is_pool)
            return 1;
    return 0;
}

/* the length of the UTF-8 character at `p` (1 for a stray byte: the pattern and the name are valid UTF-8) */
static size_t char_len(const unsigned char *p)
{
    return *p < 0x80 ? 1 : *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 1;
}

int gw_vfilter_pool_matches(const char *pattern, const char *name)
{
    const unsigned char *p = (const unsigned char *)pattern, *s = (const unsigned char *)name;
    while (*p != '\0' && *s != '\0') {
        size_t ls = char_len(s);
        if (*p == '.') {
            if (strnlen((const char *)s, ls) != ls)
                return 0;
            ++p, s += ls;
            continue;
        }
        size_t lp = char_len(p);
        if (lp != ls || memcmp(p, s, lp) != 0) {
            /* ASCII letters compare without case (other characters exactly: a narrower folding than Go's) */
            int lower_p = *p | 0x20, lower_s = *s | 0x20;
            if (lp != 1 || ls != 1 || lower_p != lower_s || lower_p < 'a' || lower_p > 'z')
                return 0;
        }
        p += lp, s += ls;
    }
    return *p == '\0' && *s == '\0';
}

char *gw_vfilter_for_pool(const gw_vfilter_t *f, const char *pool)
{
    size_t len = 0;
    for (size_t i = 0; i != f->num_tokens; ++i)
        len += strlen(f->tokens[i]) + 1;
    char *out = malloc(len + 16 * f->num_clauses + 1), *o = out;
    size_t ci = 0;
    for (size_t i = 0; i != f->num_tokens; ++i) {
        const clause_t *c = ci < f->num_clauses && f->clauses[ci].first == i ? &f->clauses[ci] : NULL;
        if (o != out)
            *o++ = ' ';
        if (c != NULL && c->is_pool) { /* the clause's outcome for this pool, as a clause 5.0.2 always decides so */
            int match = gw_vfilter_pool_matches(c->value, pool);
            if (c->ne)
                match = !match;
            if (c->not_)
                match = !match;
            o = stpcpy(o, match ? "pool ne _" : "pool eq _");
            i = c->last;
        } else {
            o = stpcpy(o, f->tokens[i]);
        }
        if (c != NULL)
            ++ci;
    }
    *o = '\0';
    return out;
}

void gw_vfilter_free(gw_vfilter_t *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i != f->num_tokens; ++i)
        free(f->tokens[i]);
    for (size_t i = 0; i != f->num_clauses; ++i)
        free(f->clauses[i].value);
    free(f->tokens), free(f->clauses);
    free(f);
}
