// audit: a database trigger and a cron job in one function (docs/FUNCTIONS.md "Database
// triggers", "Cron"). Each invocation upserts one row into the collection "audit":
//   {"id": "<lsn>:<index>", "event": <the trigger payload>}   for a database change
//   {"id": "cron:<slot>",   "event": <the cron payload>}      for a cron slot
// The id is the delivery's idempotency key, so a change delivered twice (at least once, e.g.
// across a promotion) still leaves exactly one row. The answer is the database call's status:
// anything but 2xx makes the trigger retry and, in the end, dead-letter the change.
// Deploy:
//   aerodb functions deploy audit --file audit.wasm --trigger notes:insert,update,delete
//   aerodb functions deploy audit --file audit.wasm --schedule '* * * * *'
// (service role: it runs with the service role, policies do not apply).
#include "aerodb.h"

static char request[70000];
static char id[64];

static int put(char *dst, int at, const char *s) {
    while (*s) dst[at++] = *s++;
    return at;
}

static int fail(int status, const char *message, int len) {
    aerodb_response_status(status);
    aerodb_response_write(message, len);
    return 0;
}

int handle(void) {
    int idlen = aerodb_request_header("x-aerodb-trigger-id", 19, id, 40);
    int n = put(request, 0, "{\"method\":\"POST\",\"path\":\"audit\",\"prefer\":\"resolution=merge-duplicates\",\"body\":{\"id\":\"");
    if (idlen > 0 && idlen <= 40) {
        for (int i = 0; i < idlen; i++) request[n++] = id[i];
    } else {
        int slotlen = aerodb_request_header("x-aerodb-cron-slot", 18, id, 40);
        if (slotlen <= 0 || slotlen > 40) return fail(400, "{\"error\":\"not a trigger or cron invocation\"}", 44);
        n = put(request, n, "cron:");
        for (int i = 0; i < slotlen; i++) request[n++] = id[i];
    }
    n = put(request, n, "\",\"event\":");
    int room = (int)sizeof request - n - 2;
    int len = aerodb_request_read(AERODB_BODY, request + n, room);
    if (len <= 0 || len > room) return fail(400, "{\"error\":\"payload too large\"}", 29);
    n += len;
    request[n++] = '}';
    request[n++] = '}';
    int answer_len = aerodb_db_request(request, n);
    if (answer_len < 0) return fail(500, "{\"error\":\"db_request refused\"}", 30);
    static char answer[4096];
    int got = aerodb_db_result(answer, sizeof answer);
    if (got > (int)sizeof answer) got = sizeof answer;
    aerodb_response_status(aerodb_db_status(answer, got));
    aerodb_response_header("content-type", 12, "application/json", 16);
    aerodb_response_write(answer, got);
    return 0;
}
