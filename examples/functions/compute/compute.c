// compute: an integer loop (xorshift64*, N steps), for the fuel-metered
// compute benchmark (scripts/bench --only functions): the same file is built for wasm32 (the
// function) and natively with -DNATIVE (the baseline). N comes from the request's query string
// (`?n=20000000`) or the native program's first argument, never a compile-time constant, so
// neither compiler can fold the loop away. Answers the final value in decimal.
#define DEFAULT_ITERATIONS 20000000u

static unsigned long long work(unsigned int n) {
    // xorshift64*: shifts, xors and a multiply in one dependency chain. (A linear congruential
    // step was reduced algebraically by clang -O2, so the wasm build skipped most of the loop.)
    unsigned long long x = 88172645463325252ULL;
    for (unsigned int i = 0; i < n; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x *= 2685821657736338717ULL;
    }
    return x;
}

// Digits after the first '=' of `text` (length len), or DEFAULT_ITERATIONS.
static unsigned int parse(const char *text, int len) {
    int i = 0;
    while (i < len && text[i] != '=') i++;
    unsigned int n = 0;
    int digits = 0;
    for (i++; i < len && text[i] >= '0' && text[i] <= '9' && digits < 9; i++, digits++) n = n * 10 + (unsigned)(text[i] - '0');
    return digits ? n : DEFAULT_ITERATIONS;
}

#ifdef NATIVE
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    char arg[32] = "n=";
    if (argc > 1) strncat(arg, argv[1], sizeof arg - 3);
    printf("%llu\n", work(parse(arg, (int)strlen(arg))));
    return 0;
}
#else
#include "aerodb.h"
static char out[24];
static char query[64];

int handle(void) {
    int len = aerodb_request_read(AERODB_QUERY, query, sizeof query);
    if (len > (int)sizeof query) len = sizeof query;
    unsigned long long v = work(parse(query, len < 0 ? 0 : len));
    int pos = sizeof out;
    do { out[--pos] = (char)('0' + v % 10); v /= 10; } while (v);
    aerodb_response_write(out + pos, (int)sizeof out - pos);
    return 0;
}
#endif
