/*
 * volume_filter.c: see volume_filter.h.
 */
#include <regex.h>
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
    regex_t rx;         /* is_pool, a pattern (not a name): its value compiled once, at parse */
    int compiled;       /* ... rx holds it */
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

/* ---- a clause value on `pool`: a pattern, as LXD 6.1 reads a string field's value (shared/filter/match.go) ----
 * Native compiles "(?i)" + the value with Go's regexp (RE2), anchored by "^" and "$" around it when the value holds
 * neither, and matches the pool's name with it; a value that does not compile is compared without case instead. The
 * gateway runs the value with POSIX extended regular expressions (regcomp: REG_EXTENDED | REG_ICASE, C locale), where
 * they read it as RE2 does: pattern_problem() accepts only that common syntax and refuses the rest (400), rather than
 * guess. A value with no pattern syntax at all is a name, compared without case. */

#define PATTERN_MAX 256       /* a longer pool pattern is refused: pool names are short, and it is hostile input */
#define REPEAT_MAX 1000       /* RE2's largest count; the product of a pattern's counts is held below it (regcomp expands them) */
#define EXPANDED_MAX 256      /* bytes: a pattern's length times all its counts (see pattern_problem) */
#define EXPANDED_ALL_MAX 1024 /* bytes: the same, over all the pool patterns of one filter (each is compiled once) */
#define SYNTAX "\\.+*?()|[]{}^$"

/* 1 if `v` holds no pattern syntax (a name) */
static int is_ascii(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; ++p)
        if (*p >= 0x80)
            return 0;
    return 1;
}

static int is_name(const char *v)
{
    return strpbrk(v, SYNTAX) == NULL;
}

/* the length of a [:class:] at `p` ("[:"), 0 if it is not one RE2 and ERE both know and agree on without case */
static size_t class_at(const char *p)
{
    /* (upper and lower are left out: RE2 folds them to every letter under (?i), glibc's REG_ICASE may not) */
    static const char *const names[] = {"alnum", "alpha", "blank", "cntrl",  "digit", "graph",
                                        "print", "punct", "space", "xdigit", NULL};
    for (size_t i = 0; names[i] != NULL; ++i) {
        size_t n = strlen(names[i]);
        if (strncmp(p + 2, names[i], n) == 0 && p[2 + n] == ':' && p[3 + n] == ']')
            return n + 4;
    }
    return 0;
}

/* the class of a range's end: 1 digit, 2 lower-case letter, 3 upper-case letter, 0 anything else */
static int range_kind(char c)
{
    return c >= '0' && c <= '9' ? 1 : c >= 'a' && c <= 'z' ? 2 : c >= 'A' && c <= 'Z' ? 3 : 0;
}

/* a bracket expression at `*pp` ('['): NULL, with *pp past its ']', or why it is refused */
static const char *bracket(const char **pp)
{
    const char *p = *pp + 1;
    if (*p == '^')
        ++p;
    const char *first = p; /* (a ']' or '-' there is itself, in both) */
    while (*p != ']' || p == first) {
        if (*p == '\0')
            return "an unterminated [";
        if (*p == '\\')
            return "\\ in [...] (RE2 reads an escape, POSIX a backslash)";
        if (*p == '[' && (p[1] == '.' || p[1] == '='))
            return "[. or [= in [...]";
        if (*p == '[' && p[1] == ':') {
            size_t n = class_at(p);
            if (n == 0)
                return "a character class other than alnum, alpha, blank, cntrl, digit, graph, print, punct, space, xdigit";
            p += n;
            continue;
        }
        if (p[1] == '-' && p[2] != ']' && p[2] != '\0') { /* a range */
            if (range_kind(p[0]) == 0 || range_kind(p[0]) != range_kind(p[2]) || p[0] > p[2])
                return "a range other than of digits, of lower-case or of upper-case letters, in order";
            p += 3;
            continue;
        }
        if (*p == '-' && p != first && p[1] != ']')
            return "a - in [...] other than first, last or in a range";
        ++p;
    }
    *pp = p + 1;
    return NULL;
}

/* a count {n}, {n,} or {n,m} at `*pp` ('{'): NULL, with *pp past it and *bound its largest bound (at least 1), or why
 * it is refused */
static const char *count(const char **pp, unsigned long *bound)
{
    char *end;
    const char *p = *pp + 1;
    if (*p < '0' || *p > '9')
        return "a { that is not a count";
    unsigned long n = strtoul(p, &end, 10), m = n;
    p = end;
    if (*p == ',') {
        ++p;
        if (*p >= '0' && *p <= '9') {
            m = strtoul(p, &end, 10);
            p = end;
        }
    }
    if (*p != '}' || n > REPEAT_MAX || m > REPEAT_MAX || m < n)
        return "a { that is not a count up to 1000";
    *bound = m != 0 ? m : 1;
    *pp = p + 1;
    return NULL;
}

/* NULL if the pool pattern `v` means the same to RE2 and to POSIX ERE (or is a name), else why not; *expanded: its length
 * times all its counts (0 for a name) */
static const char *pattern_problem(const char *v, size_t *expanded)
{
    *expanded = 0;
    if (is_name(v))
        return NULL;
    if (strlen(v) > PATTERN_MAX)
        return "longer than 256 bytes";
    unsigned long product = 1;
    int atom = 0;  /* what came last can be repeated (a character, '.', [...], (...)) */
    int empty = 1; /* at the start of an alternative: nothing since the start, '(' or '|' */
    size_t depth = 0;
    for (const char *p = v; *p != '\0';) {
        unsigned char c = (unsigned char)*p;
        const char *why = NULL;
        unsigned long n;
        if (c >= 0x80)
            return "a character beyond ASCII in a pattern";
        switch (c) {
        case '\\':
            if (p[1] == '\0' || (unsigned char)p[1] >= 0x80 || !strchr("!\"#$%&()*+,-./:;=?@[\\]^_{|}~", p[1]))
                return "\\ before anything but punctuation other than < > ' ` (GNU's anchors)";
            p += 2, atom = 1, empty = 0;
            continue;
        case '[':
            if ((why = bracket(&p)) != NULL)
                return why;
            atom = 1, empty = 0;
            continue;
        case '(':
            if (p[1] == '?')
                return "(? groups and flags";
            ++depth, atom = 0, empty = 1;
            break;
        case ')':
            if (depth == 0)
                return "an unbalanced )";
            if (empty)
                return "an empty alternative or group";
            --depth, atom = 1, empty = 0;
            break;
        case '|':
            if (empty)
                return "an empty alternative or group";
            atom = 0, empty = 1;
            break;
        case '*':
        case '+':
        case '?':
            if (!atom)
                return "a repetition of nothing or of a repetition";
            atom = 0;
            break;
        case '{':
            if (!atom)
                return "a repetition of nothing or of a repetition";
            if ((why = count(&p, &n)) != NULL)
                return why;
            if ((product *= n) > REPEAT_MAX)
                return "counts whose product is over 1000";
            atom = 0;
            continue;
        case '}':
            return "a } without its {";
        case '^':
        case '$':
            atom = 0, empty = 0;
            break;
        default:
            atom = 1, empty = 0;
        }
        ++p;
    }
    if (depth != 0)
        return "an unbalanced (";
    if (empty)
        return "an empty alternative or group";
    /* what regcomp expands counts into: its time and memory grow faster than that size (`(.?.?.?.?.?.?.?.?.?.?){1000}x`,
     * 29 bytes, took 2.4 s and 1.6 GB), and the gateway's one loop waits for it; bounded by the pattern's length times all
     * its counts, which overestimates and stays cheap to compute */
    if ((*expanded = strlen(v) * product) > EXPANDED_MAX)
        return "counts that repeat the pattern to over 256 bytes";
    return NULL;
}

/* `pattern` (accepted by pattern_problem, ASCII) compiled as native would read it: 0 if it cannot be */
static int compile(const char *pattern, regex_t *rx)
{
    /* anchored at both ends unless the value holds a '^' or a '$' anywhere, as native decides it; each '.' outside
     * [...] written [^<newline>]: RE2's '.' takes no newline (a name may hold one), POSIX's does */
    size_t len = strlen(pattern);
    char *re = malloc(2 + 4 * len + 1), *o = re;
    if (re == NULL)
        abort();
    int anchor = strpbrk(pattern, "^$") == NULL;
    if (anchor)
        *o++ = '^';
    for (const char *p = pattern; *p != '\0';) {
        const char *from = p;
        if (*p == '\\')
            p += 2;
        else if (*p != '[' || bracket(&p) != NULL) /* (accepted: it ends) */
            ++p;
        if (*from == '.')
            o = stpcpy(o, "[^\n]");
        else
            o = (char *)memcpy(o, from, p - from) + (p - from);
    }
    if (anchor)
        *o++ = '$';
    *o = '\0';
    int ok = regcomp(rx, re, REG_EXTENDED | REG_NOSUB | REG_ICASE) == 0;
    free(re);
    return ok;
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
    size_t all = 0, expanded;
    for (size_t i = 0; i != f->num_clauses; ++i) {
        clause_t *c = &f->clauses[i];
        const char *why = c->is_pool ? pattern_problem(c->value, &expanded) : NULL;
        if (why == NULL && c->is_pool && (all += expanded) > EXPANDED_ALL_MAX)
            why = "the filter's pool patterns repeat to over 1024 bytes in all";
        if (why == NULL && c->is_pool && is_ascii(c->value) && !(c->compiled = compile(c->value, &c->rx)))
            why = "it does not compile"; /* (a name beyond ASCII is compared by same_name) */
        if (why != NULL) {
            size_t shown = strlen(c->value);
            if (shown > PATTERN_MAX) /* (cut at a character's start: the message stays text) */
                for (shown = PATTERN_MAX; ((unsigned char)c->value[shown] & 0xc0) == 0x80; --shown)
                    ;
            *status = 400;
            *msg = gw_text_format("Invalid filter: the pool pattern \"%.*s%s\" is not supported by this gateway: %s", (int)shown,
                                  c->value, shown < strlen(c->value) ? "..." : "", why);
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

/* a name (no pattern syntax) beyond ASCII: compared character by character, ASCII letters without case (other
 * characters exactly: a narrower folding than Go's) */
static int same_name(const char *pattern, const char *name)
{
    const unsigned char *p = (const unsigned char *)pattern, *s = (const unsigned char *)name;
    while (*p != '\0' && *s != '\0') {
        size_t ls = char_len(s), lp = char_len(p);
        if (lp != ls || memcmp(p, s, lp) != 0) {
            int lower_p = *p | 0x20, lower_s = *s | 0x20;
            if (lp != 1 || ls != 1 || lower_p != lower_s || lower_p < 'a' || lower_p > 'z')
                return 0;
        }
        p += lp, s += ls;
    }
    return *p == '\0' && *s == '\0';
}

/* the pool's name as the C locale's regexec reads it as RE2 reads the UTF-8 name with (?i): each character beyond ASCII
 * one byte (0x80: '.' and [^...] take it, no class nor letter does), but U+212A KELVIN SIGN and U+017F LATIN SMALL LETTER
 * LONG S, which Go folds to k and s */
static char *c_locale_name(const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    char *out = malloc(strlen(name) + 1), *o = out;
    if (out == NULL)
        abort();
    while (*s != '\0') {
        size_t n = strnlen((const char *)s, char_len(s));
        if (n == 3 && s[0] == 0xe2 && s[1] == 0x84 && s[2] == 0xaa)
            *o++ = 'k';
        else if (n == 2 && s[0] == 0xc5 && s[1] == 0xbf)
            *o++ = 's';
        else
            *o++ = *s < 0x80 ? (char)*s : (char)0x80;
        s += n;
    }
    *o = '\0';
    return out;
}

/* `name` matches the compiled pattern `rx` */
static int rx_matches(const regex_t *rx, const char *name)
{
    char *subject = c_locale_name(name);
    int match = regexec(rx, subject, 0, NULL, 0) == 0;
    free(subject);
    return match;
}

/* `name` matches `pattern`, a name or a pattern pattern_problem accepts (compiled in `rx`, or NULL: compiled now) */
static int matches(const char *pattern, const regex_t *rx, const char *name)
{
    if (!is_ascii(pattern)) /* (a name: pattern_problem refuses a pattern beyond ASCII) */
        return same_name(pattern, name);
    if (rx != NULL)
        return rx_matches(rx, name);
    regex_t own;
    if (!compile(pattern, &own)) /* (parse refuses it: never asked) */
        return 0;
    int match = rx_matches(&own, name);
    regfree(&own);
    return match;
}

int gw_vfilter_pool_matches(const char *pattern, const char *name)
{
    size_t expanded;
    if (pattern_problem(pattern, &expanded) != NULL) /* (parse refuses it: never asked) */
        return 0;
    return matches(pattern, NULL, name);
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
            int match = matches(c->value, c->compiled ? &c->rx : NULL, pool);
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
    for (size_t i = 0; i != f->num_clauses; ++i) {
        free(f->clauses[i].value);
        if (f->clauses[i].compiled)
            regfree(&f->clauses[i].rx);
    }
    free(f->tokens), free(f->clauses);
    free(f);
}
