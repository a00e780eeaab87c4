/* render(templates, data, pos, count, head, offset, dropped) renders packed records straight into one
 * bytes object: the writer's path without a tuple, a str and a bytes object per record. It is
 * unpack + texts + the chain's "dropped_before" + chain + b"\n".join, byte for byte (the reference is
 * audit_writer._render_py, built from those functions); templates[i] is what texts' fixed_of gives for
 * shape i: (fixed text, done).
 *
 * Errors are those of the reference, in its order: the records' bytes are checked first (unpack), then
 * each record's template, time and phase (texts, templates in first-use order), then the texts are
 * encoded (chain: a lone surrogate in a template or the head is a UnicodeEncodeError). */

#include "chainfast.h"

typedef struct {
    PyObject *fixed; /* borrowed from the templates tuple, which the call holds */
    const char *utf8; /* its UTF-8 (cached by the str), once the writing pass has needed it */
    Py_ssize_t len;
    char checked, done;
} Template;

/* The output is built here, kept between calls (a frame's chunks reuse it), then copied into bytes. */
static char *out_data;
static Py_ssize_t out_len, out_cap;
#define OUT_KEEP (4 << 20)

static int
out_reserve(Py_ssize_t more)
{
    if (out_cap - out_len >= more)
        return 0;
    Py_ssize_t cap = out_cap ? out_cap : 65536;
    while (cap - out_len < more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(out_data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out_data = data;
    out_cap = cap;
    return 0;
}

static inline void
out_put(const char *p, Py_ssize_t n)
{
    memcpy(out_data + out_len, p, (size_t)n);
    out_len += n;
}

/* A count argument of render: an int in 0..PY_SSIZE_T_MAX. */
static int
index_arg(PyObject *v, const char *what, Py_ssize_t *out)
{
    if (!PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "render() %s must be int, not %.200s", what, Py_TYPE(v)->tp_name);
        return -1;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && !overflow && PyErr_Occurred())
        return -1;
    if (overflow || x < 0 || x > PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_ValueError, "render() %s out of range", what);
        return -1;
    }
    *out = (Py_ssize_t)x;
    return 0;
}

/* Checks a template the first time a record uses it (texts' fixed_of result check). */
static int
template_check(Template *tp, PyObject *entry)
{
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 0))) {
        PyErr_SetString(PyExc_TypeError, "templates must be (str, bool) tuples");
        return -1;
    }
    int done = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1));
    if (done < 0 || PyUnicode_READY(PyTuple_GET_ITEM(entry, 0)) < 0)
        return -1;
    tp->fixed = PyTuple_GET_ITEM(entry, 0);
    tp->done = (char)done;
    tp->checked = 1;
    return 0;
}

/* Writes one record's line (and its newline) chained after the head hp[0:hl]; the new head in cur. */
static int
render_line(const unsigned char *d, Py_ssize_t pos, Template *tp, double offset, long long dropped,
            const char *hp, Py_ssize_t hl, char cur[64])
{
    static const char PREV[] = ",\"prev\":\"";
    Py_ssize_t n = d[pos + 4];
    const unsigned char *rid = d + pos + 5, *tail = d + pos + 5 + n;
    int32_t status = (int32_t)get_u32(tail);
    double started = get_f64(tail + 12), ended = get_f64(tail + 20);
    if (tp->utf8 == NULL && (tp->utf8 = PyUnicode_AsUTF8AndSize(tp->fixed, &tp->len)) == NULL)
        return -1;
    double t = offset + ended;
    long long whole;
    if (cf_time_second(t, &whole) < 0) /* checked before: only gmtime's text is made again */
        return -1;
    char head[TIME_HEAD_MAX], sbuf[24], bbuf[24], dbuf[32], drop[24];
    Py_ssize_t tl = cf_time_head(t, whole, head);
    const char *st = NULL, *bt = NULL, *dt = NULL, *dr = NULL;
    char *duration = NULL;
    Py_ssize_t more = 0, dl = 0;
    if (status != -1) {
        st = digits_back(sbuf + 24, (unsigned long long)status);
        bt = digits_back(bbuf + 24, get_u64(tail + 4));
        double ms = (ended - started) * 1000;
        dt = cf_format_ms(ms, dbuf);
        if (dt == NULL && (dt = duration = PyOS_double_to_string(ms, 'f', 3, 0, NULL)) == NULL)
            return -1;
        dl = (Py_ssize_t)strlen(dt);
        more = 10 + (sbuf + 24 - st) + 9 + (bbuf + 24 - bt) + 15 + dl;
    }
    if (dropped > 0) {
        dr = digits_back(drop + 24, (unsigned long long)dropped);
        more += 18 + (drop + 24 - dr);
    }
    if (out_reserve(tl + n + tp->len + more + (Py_ssize_t)sizeof(PREV) - 1 + hl + 3) < 0) {
        PyMem_Free(duration);
        return -1;
    }
    Py_ssize_t start = out_len;
    out_put(head, tl);
    out_put((const char *)rid, n);
    out_put(tp->utf8, tp->len);
    if (st != NULL) {
        out_put(",\"status\":", 10);
        out_put(st, sbuf + 24 - st);
        out_put(",\"bytes\":", 9);
        out_put(bt, bbuf + 24 - bt);
        out_put(",\"duration_ms\":", 15);
        out_put(dt, dl);
        PyMem_Free(duration);
    }
    if (dr != NULL) {
        out_put(",\"dropped_before\":", 18);
        out_put(dr, drop + 24 - dr);
    }
    out_put(PREV, sizeof(PREV) - 1);
    out_put(hp, hl);
    out_put("\"}", 2);
    if (cf_sha256_hex(out_data + start, (size_t)(out_len - start), cur) < 0)
        return -1;
    out_data[out_len++] = '\n';
    return 0;
}

PyObject *
cf_render(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "render() takes exactly 7 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *head = args[4];
    if (!PyList_Check(args[0]) && !PyTuple_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "templates must be a list or tuple, not %.200s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) /* held: a bytearray cannot change under us */
        return NULL;
    PyObject *templates = NULL, *result = NULL;
    Template *tps = NULL;
    Py_ssize_t pos, count;
    long long dropped;
    double offset;
    if (index_arg(args[2], "pos", &pos) < 0 || index_arg(args[3], "count", &count) < 0)
        goto done;
    if (!PyUnicode_Check(head)) {
        PyErr_Format(PyExc_TypeError, "render() head must be str, not %.200s", Py_TYPE(head)->tp_name);
        goto done;
    }
    Py_ssize_t dropped_index;
    if (cf_as_double(args[5], "offset", &offset) < 0 || index_arg(args[6], "dropped", &dropped_index) < 0)
        goto done;
    dropped = (long long)dropped_index;
    const unsigned char *d = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    if (pos > end) {
        PyErr_SetString(PyExc_ValueError, "render() pos out of range");
        goto done;
    }
    /* The records' bytes, as unpack checks them. */
    Py_ssize_t stop = pos, n = 0;
    templates = PySequence_Tuple(args[0]); /* a tuple of our own: nothing can change it under us */
    if (templates == NULL)
        goto done;
    Py_ssize_t ntemplates = PyTuple_GET_SIZE(templates);
    for (; n < count && stop < end; n++)
        if ((stop = cf_check_record(d, stop, end, ntemplates)) < 0)
            goto done;
    if (n == 0) {
        result = Py_BuildValue("(y#On)", "", (Py_ssize_t)0, head, pos);
        goto done;
    }
    /* Each record's template, time and phase, as texts checks them. */
    tps = PyMem_Calloc((size_t)ntemplates, sizeof(Template));
    if (tps == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t p = pos; p < stop; p += REC_FIXED + d[p + 4]) {
        uint32_t index = get_u32(d + p);
        if (!tps[index].checked && template_check(&tps[index], PyTuple_GET_ITEM(templates, index)) < 0)
            goto done;
        const unsigned char *tail = d + p + 5 + d[p + 4];
        long long whole;
        if (cf_time_second(offset + get_f64(tail + 20), &whole) < 0)
            goto done;
        int start = (int32_t)get_u32(tail) == -1;
        if (start && tps[index].done) {
            PyErr_SetString(PyExc_TypeError, "not enough arguments for format string");
            goto done;
        }
        if (!start && !tps[index].done) {
            PyErr_SetString(PyExc_TypeError, "not all arguments converted during string formatting");
            goto done;
        }
    }
    /* The lines, chained. */
    Py_ssize_t hl;
    const char *hp = PyUnicode_AsUTF8AndSize(head, &hl); /* owned by head; then the last line's hash */
    if (hp == NULL)
        goto done;
    char cur[64];
    out_len = 0;
    for (Py_ssize_t p = pos; p < stop; p += REC_FIXED + d[p + 4]) {
        if (render_line(d, p, &tps[get_u32(d + p)], offset, p == pos ? dropped : 0, hp, hl, cur) < 0)
            goto done;
        hp = cur;
        hl = 64;
    }
    PyObject *blob = PyBytes_FromStringAndSize(out_data, out_len);
    PyObject *new_head = blob ? PyUnicode_FromStringAndSize(cur, 64) : NULL;
    if (new_head != NULL)
        result = Py_BuildValue("(NNn)", blob, new_head, stop);
    else
        Py_XDECREF(blob);
done:
    if (out_cap > OUT_KEEP) { /* after a rare huge call: do not keep its memory */
        PyMem_Free(out_data);
        out_data = NULL;
        out_cap = 0;
    }
    out_len = 0;
    PyMem_Free(tps);
    Py_XDECREF(templates);
    PyBuffer_Release(&view);
    return result;
}
