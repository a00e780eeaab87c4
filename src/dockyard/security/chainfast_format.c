/* Number and time formatting shared by texts() and render(): byte for byte what the Python reference's
 * '%.3f' and time.strftime give. */

#include "chainfast.h"

/* The seconds text of the last record formatted ("%Y-%m-%dT%H:%M:%S" of gmtime): records come in time
 * order, so one gmtime/strftime serves every record of a second. */
static long long last_second;
static int have_second;
static char second_text[SECOND_TEXT_MAX];
static size_t second_len;

/* '%.3f' % x for the common durations, in buf (returned); NULL when x needs the general formatter.
 * Python formats with correct rounding of x's exact binary value, ties to even. x * 1000 is exact in a
 * long double of 64 significand bits (53 + 7 significant bits of 1000), and so is its fraction: rounding
 * it is exact too. Saves PyOS_double_to_string's allocation and dtoa (~0.2 us per record). */
const char *
cf_format_ms(double x, char buf[32])
{
#if LDBL_MANT_DIG >= 64
    if (!(fabs(x) < 1e15)) /* also NaN */
        return NULL;
    long double y = (long double)fabs(x) * 1000.0L;
    unsigned long long q = (unsigned long long)y;
    long double frac = y - (long double)q;
    if (frac > 0.5L || (frac == 0.5L && (q & 1)))
        q++;
    char *end = buf + 31;
    *end = '\0';
    unsigned long long milli = q % 1000;
    for (int i = 0; i < 3; i++, milli /= 10)
        *--end = (char)('0' + milli % 10);
    *--end = '.';
    end = digits_back(end, q / 1000);
    if (signbit(x))
        *--end = '-';
    return end;
#else
    (void)x;
    (void)buf;
    return NULL;
#endif
}

/* The seconds text of whole (gmtime + strftime, as time.strftime(fmt, time.gmtime(whole))). */
static int
set_second(long long whole)
{
    time_t tt = (time_t)whole;
    struct tm tm;
    errno = 0;
    if (gmtime_r(&tt, &tm) == NULL) {
        if (errno == 0)
            errno = EINVAL;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    size_t n = strftime(second_text, sizeof(second_text), "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "time out of range");
        return -1;
    }
    second_len = n;
    last_second = whole;
    have_second = 1;
    return 0;
}

/* int(t) of a record's wall-clock time t, after time.strftime(..., time.gmtime(int(t))) would succeed on it
 * (second_text then holds that text): -1 with the exception Python raises otherwise. */
int
cf_time_second(double t, long long *whole)
{
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (isinf(t)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return -1;
    }
    if (!(t > -9.2e18 && t < 9.2e18)) {
        PyErr_SetString(PyExc_OverflowError, "timestamp out of range for platform time_t");
        return -1;
    }
    *whole = (long long)t; /* int(t): toward zero */
    if ((!have_second || *whole != last_second) && set_second(*whole) < 0)
        return -1;
    return 0;
}

/* A record's text up to its request id, {"time":"<seconds>.<usec>Z","request_id":", into head
 * (TIME_HEAD_MAX bytes); cf_time_second(t, &whole) succeeded just before. Returns the length. */
Py_ssize_t
cf_time_head(double t, long long whole, char *head)
{
    long long usec = (long long)((t - (double)whole) * 1e6);
    Py_ssize_t hl = 9;
    memcpy(head, "{\"time\":\"", 9);
    memcpy(head + hl, second_text, second_len);
    hl += (Py_ssize_t)second_len;
    head[hl++] = '.';
    if (usec >= 0 && usec < 1000000) {
        for (int i = 5; i >= 0; i--, usec /= 10)
            head[hl + i] = (char)('0' + usec % 10);
        hl += 6;
    } else {
        hl += snprintf(head + hl, 32, "%06lld", usec);
    }
    memcpy(head + hl, "Z\",\"request_id\":\"", 17);
    return hl + 17;
}
