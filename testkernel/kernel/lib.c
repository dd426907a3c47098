/*
 * rhyzome-testkernel: freestanding helpers (memory, parsing, 64-bit divide).
 */
#include "kernel.h"

void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    if (d < s) {
        while (n--)
            *d++ = *s++;
    } else {
        while (n--)
            d[n] = s[n];
    }
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = dst;
    while (n--)
        *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++) {
        if (x[i] != y[i])
            return x[i] < y[i] ? -1 : 1;
    }
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

/* 1 if the n bytes at p are exactly the C string lit. */
int mem_eq_str(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return l == n && memcmp(p, lit, n) == 0;
}

/* Unsigned decimal, no sign, no leading/trailing junk, no overflow. */
int parse_u64(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint64_t d;
        if (p[i] < '0' || p[i] > '9')
            return -1;
        d = (uint64_t)(p[i] - '0');
        if (v > udiv64(0xFFFFFFFFFFFFFFFFull - d, 10))
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int parse_u32(const char *p, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t d;
        if (p[i] < '0' || p[i] > '9')
            return -1;
        d = (uint32_t)(p[i] - '0');
        if (v > (0xFFFFFFFFu - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Signed decimal (optional leading '-' or '+'), within int32 range. */
int parse_i32(const char *p, size_t n, int32_t *out)
{
    int neg = 0;
    uint32_t v;
    if (n > 0 && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        p++;
        n--;
    }
    if (parse_u32(p, n, &v) < 0)
        return -1;
    if (neg) {
        if (v > 0x80000000u)
            return -1;
        *out = (int32_t)(0u - v);
    } else {
        if (v > 0x7FFFFFFFu)
            return -1;
        *out = (int32_t)v;
    }
    return 0;
}

/* Dotted quad "A.B.C.D", each 0..255, 1..3 digits; result in host order. */
int parse_ipv4(const char *p, size_t n, uint32_t *out)
{
    uint32_t addr = 0;
    size_t i = 0;
    for (int part = 0; part < 4; part++) {
        size_t start = i;
        uint32_t v;
        while (i < n && p[i] != '.')
            i++;
        if (i - start > 3 || parse_u32(p + start, i - start, &v) < 0 ||
            v > 255)
            return -1;
        addr = (addr << 8) | v;
        if (part < 3) {
            if (i >= n || p[i] != '.')
                return -1;
            i++;
        }
    }
    if (i != n)
        return -1;
    *out = addr;
    return 0;
}

/* Shift-and-subtract 64-bit unsigned division (no libgcc needed). */
static uint64_t udivmod64(uint64_t n, uint64_t d, uint64_t *rem)
{
    uint64_t q = 0, r = 0;
    if (d == 0) {
        if (rem)
            *rem = 0;
        return ~0ull;
    }
    if ((n >> 32) == 0 && (d >> 32) == 0) {
        uint32_t n32 = (uint32_t)n, d32 = (uint32_t)d;
        if (rem)
            *rem = n32 % d32;
        return n32 / d32;
    }
    for (int i = 63; i >= 0; i--) {
        r = (r << 1) | ((n >> i) & 1);
        if (r >= d) {
            r -= d;
            q |= 1ull << i;
        }
    }
    if (rem)
        *rem = r;
    return q;
}

uint64_t udiv64(uint64_t n, uint64_t d)
{
    return udivmod64(n, d, NULL);
}

/* gcc emits calls to these for 64-bit '/' and '%' on i386. */
uint64_t __udivdi3(uint64_t n, uint64_t d);
uint64_t __umoddi3(uint64_t n, uint64_t d);
uint64_t __udivdi3(uint64_t n, uint64_t d)
{
    return udivmod64(n, d, NULL);
}
uint64_t __umoddi3(uint64_t n, uint64_t d)
{
    uint64_t r;
    udivmod64(n, d, &r);
    return r;
}
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem);
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem)
{
    return udivmod64(n, d, rem);
}
