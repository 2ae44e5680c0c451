// add: an rpc taking integers a and b and answering their sum (POST /rest/v1/rpc/add with
// {"a":2,"b":40} -> 42). Deploy: aerodb functions deploy add --file add.wasm --rpc 'a:int,b:int'.
// No libc: a tiny JSON reader for the argument object the host sends ({"a":2,"b":40}; the host
// has already checked that exactly a and b are present and are integers).
#include "aerodb.h"

static char args[256];
static char out[32];

// The integer after "\"<key>\":" in args, or 0.
static long long field(const char *key, int n) {
    for (int i = 0; i + 4 < n; i++) {
        if (args[i] == '"' && args[i + 1] == key[0] && args[i + 2] == '"' && args[i + 3] == ':') {
            int j = i + 4, negative = 0;
            long long v = 0;
            if (args[j] == '-') { negative = 1; j++; }
            while (j < n && args[j] >= '0' && args[j] <= '9') { v = v * 10 + (args[j] - '0'); j++; }
            return negative ? -v : v;
        }
    }
    return 0;
}

int handle(void) {
    int n = aerodb_request_read(AERODB_ARGS, args, sizeof args);
    if (n < 0 || n > (int)sizeof args) {
        aerodb_response_status(400);
        aerodb_response_write("{\"message\":\"arguments too long\"}", 32);
        return 0;
    }
    long long sum = field("a", n) + field("b", n);
    // Decimal text of sum, right to left.
    int pos = sizeof out;
    unsigned long long m = sum < 0 ? 0ULL - (unsigned long long)sum : (unsigned long long)sum;
    do { out[--pos] = (char)('0' + m % 10); m /= 10; } while (m && pos > 1);
    if (sum < 0) out[--pos] = '-';
    aerodb_response_header("content-type", 12, "application/json", 16);
    aerodb_response_write(out + pos, (int)sizeof out - pos);
    return 0;
}
