// compute: a fixed integer loop (a linear congruential generator, ITERATIONS steps), for the
// fuel-metered compute benchmark (scripts/bench --only functions): the same file is built for
// wasm32 (the function) and natively with -DNATIVE (the baseline). Answers the final value.
#ifndef ITERATIONS
#define ITERATIONS 20000000u
#endif

static unsigned long long work(void) {
    unsigned long long x = 1;
    for (unsigned int i = 0; i < ITERATIONS; i++) x = x * 6364136223846793005ULL + i;
    return x;
}

#ifdef NATIVE
#include <stdio.h>
int main(void) {
    printf("%llu\n", work());
    return 0;
}
#else
#include "aerodb.h"
static char out[24];

int handle(void) {
    unsigned long long v = work();
    int pos = sizeof out;
    do { out[--pos] = (char)('0' + v % 10); v /= 10; } while (v);
    aerodb_response_write(out + pos, (int)sizeof out - pos);
    return 0;
}
#endif
