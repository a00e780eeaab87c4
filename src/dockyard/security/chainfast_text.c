/* texts(records, fixed_of, offset) -> list[str]: each audit record's JSON text (reference:
 * audit_writer._texts_py). */

#include "chainfast.h"

/* '%d' % v, as Python formats it: an int's value, or int(v) of another number; ASCII text in *text.
 * small (>= 24 bytes) holds the digits of a value that fits in a long long; larger ones go to *keep. */
static int
format_int(PyObject *v, char *small, const char **text, Py_ssize_t *len, PyObject **keep)
{
    PyObject *num = NULL;
    if (!PyLong_Check(v)) {
        if (!PyNumber_Check(v))
            goto wrongtype;
        num = PyNumber_Long(v);
        if (num == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                goto wrongtype;
            }
            return -1;
        }
        v = num;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (x == -1 && PyErr_Occurred()) {
        Py_XDECREF(num);
        return -1;
    }
    if (overflow) {
        PyObject *s = PyNumber_ToBase(v, 10);
        Py_XDECREF(num);
        if (s == NULL)
            return -1;
        *keep = s;
        *text = (const char *)PyUnicode_DATA(s); /* decimal digits: ASCII */
        *len = PyUnicode_GET_LENGTH(s);
        return 0;
    }
    Py_XDECREF(num);
    char *end = small + 24;
    char *start = digits_back(end, x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x);
    if (x < 0)
        *--start = '-';
    *text = start;
    *len = end - start;
    return 0;
wrongtype:
    PyErr_Format(PyExc_TypeError, "%%d format: a real number is required, not %.200s", Py_TYPE(v)->tp_name);
    return -1;
}

typedef struct {
    PyObject *shape; /* strong references: fixed_of may run any code */
    PyObject *entry; /* fixed_of(shape): (fixed, done) */
    PyObject *fixed;
    int done;
} Shaped;

#define SHAPES 16 /* per call; records of one connection share a shape, a chunk has few of them */

static Shaped *
lookup(Shaped *cache, int *count, int *next, PyObject *fixed_of, PyObject *shape)
{
    for (int i = 0; i < *count; i++)
        if (cache[i].shape == shape)
            return &cache[i];
    PyObject *entry = PyObject_CallOneArg(fixed_of, shape);
    if (entry == NULL)
        return NULL;
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 0))) {
        PyErr_SetString(PyExc_TypeError, "fixed_of(shape) must return a (str, bool) tuple");
        Py_DECREF(entry);
        return NULL;
    }
    int done = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 1));
    if (done < 0 || PyUnicode_READY(PyTuple_GET_ITEM(entry, 0)) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    Shaped *slot;
    if (*count < SHAPES) {
        slot = &cache[(*count)++];
    } else { /* full: replace round robin */
        slot = &cache[*next];
        *next = (*next + 1) % SHAPES;
        Py_DECREF(slot->shape);
        Py_DECREF(slot->entry);
    }
    Py_INCREF(shape);
    slot->shape = shape;
    slot->entry = entry;
    slot->fixed = PyTuple_GET_ITEM(entry, 0);
    slot->done = done;
    return slot;
}

/* A piece of a record's text: ASCII bytes, or a str (request id, fixed text: possibly not ASCII). */
typedef struct {
    const char *ascii;
    Py_ssize_t len;
    PyObject *str;
} Piece;

/* Joins the pieces into one str: a copy into an ASCII string when all are ASCII (the common case). */
static PyObject *
join(Piece *pieces, int n)
{
    Py_ssize_t total = 0;
    int ascii = 1;
    for (int i = 0; i < n; i++) {
        if (pieces[i].str != NULL) {
            if (!PyUnicode_IS_ASCII(pieces[i].str))
                ascii = 0;
            total += PyUnicode_GET_LENGTH(pieces[i].str);
        } else {
            total += pieces[i].len;
        }
    }
    if (ascii) {
        PyObject *s = PyUnicode_New(total, 127);
        if (s == NULL)
            return NULL;
        char *p = (char *)PyUnicode_DATA(s);
        for (int i = 0; i < n; i++) {
            if (pieces[i].str != NULL) {
                Py_ssize_t l = PyUnicode_GET_LENGTH(pieces[i].str);
                memcpy(p, PyUnicode_DATA(pieces[i].str), l);
                p += l;
            } else {
                memcpy(p, pieces[i].ascii, pieces[i].len);
                p += pieces[i].len;
            }
        }
        return s;
    }
    PyObject *parts = PyList_New(n);
    if (parts == NULL)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *part = pieces[i].str;
        if (part != NULL)
            Py_INCREF(part);
        else if ((part = PyUnicode_FromStringAndSize(pieces[i].ascii, pieces[i].len)) == NULL) {
            Py_DECREF(parts);
            return NULL;
        }
        PyList_SET_ITEM(parts, i, part);
    }
    PyObject *empty = PyUnicode_FromStringAndSize(NULL, 0);
    PyObject *s = empty ? PyUnicode_Join(empty, parts) : NULL;
    Py_XDECREF(empty);
    Py_DECREF(parts);
    return s;
}

/* One record's text; NULL with an exception set. */
static PyObject *
record_text(PyObject *rec, Shaped *cache, int *count, int *next, PyObject *fixed_of, double offset)
{
    PyObject *fields = rec;
    if (!PyTuple_Check(rec)) {
        fields = PySequence_Tuple(rec);
        if (fields == NULL) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "cannot unpack non-iterable %.200s object", Py_TYPE(rec)->tp_name);
            }
            return NULL;
        }
    } else {
        Py_INCREF(fields);
    }
    PyObject *result = NULL, *rid_str = NULL, *status_keep = NULL, *bytes_keep = NULL;
    char *duration = NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(fields);
    if (nf != 6) {
        if (nf > 6)
            PyErr_SetString(PyExc_ValueError, "too many values to unpack (expected 6)");
        else
            PyErr_Format(PyExc_ValueError, "not enough values to unpack (expected 6, got %zd)", nf);
        goto done;
    }
    PyObject *shape = PyTuple_GET_ITEM(fields, 0), *rid = PyTuple_GET_ITEM(fields, 1);
    PyObject *status = PyTuple_GET_ITEM(fields, 2), *nbytes = PyTuple_GET_ITEM(fields, 3);
    PyObject *started = PyTuple_GET_ITEM(fields, 4), *ended = PyTuple_GET_ITEM(fields, 5);

    Shaped *shaped = lookup(cache, count, next, fixed_of, shape);
    if (shaped == NULL)
        goto done;
    double end;
    if (cf_as_double(ended, "ended", &end) < 0)
        goto done;
    double t = offset + end;
    long long whole;
    if (cf_time_second(t, &whole) < 0)
        goto done;
    char head[TIME_HEAD_MAX];
    Py_ssize_t hl = cf_time_head(t, whole, head);

    if (PyUnicode_CheckExact(rid)) { /* '%s' % rid */
        Py_INCREF(rid);
        rid_str = rid;
    } else if ((rid_str = PyObject_Str(rid)) == NULL) {
        goto done;
    }
    if (PyUnicode_READY(rid_str) < 0)
        goto done;

    Piece pieces[9] = {{head, hl, NULL}, {NULL, 0, rid_str}, {NULL, 0, shaped->fixed}};
    int np = 3;
    char sbuf[24], bbuf[24], dbuf[32];
    if (started == Py_None) {
        if (shaped->done) {
            PyErr_SetString(PyExc_TypeError, "not enough arguments for format string");
            goto done;
        }
    } else {
        if (!shaped->done) {
            PyErr_SetString(PyExc_TypeError, "not all arguments converted during string formatting");
            goto done;
        }
        double start;
        const char *st, *bt;
        Py_ssize_t sl, bl;
        if (format_int(status, sbuf, &st, &sl, &status_keep) < 0
            || format_int(nbytes, bbuf, &bt, &bl, &bytes_keep) < 0 || cf_as_double(started, "started", &start) < 0)
            goto done;
        double ms = (end - start) * 1000;
        const char *dt = cf_format_ms(ms, dbuf);
        if (dt == NULL) {
            duration = PyOS_double_to_string(ms, 'f', 3, 0, NULL); /* '%.3f' % ms, in general */
            if (duration == NULL)
                goto done;
            dt = duration;
        }
        pieces[np++] = (Piece){",\"status\":", 10, NULL};
        pieces[np++] = (Piece){st, sl, NULL};
        pieces[np++] = (Piece){",\"bytes\":", 9, NULL};
        pieces[np++] = (Piece){bt, bl, NULL};
        pieces[np++] = (Piece){",\"duration_ms\":", 15, NULL};
        pieces[np++] = (Piece){dt, (Py_ssize_t)strlen(dt), NULL};
    }
    result = join(pieces, np);
done:
    if (duration != NULL)
        PyMem_Free(duration);
    Py_XDECREF(status_keep);
    Py_XDECREF(bytes_keep);
    Py_XDECREF(rid_str);
    Py_DECREF(fields);
    return result;
}

PyObject *
cf_texts(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "texts() takes exactly 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *fixed_of = args[1];
    if (!PyCallable_Check(fixed_of)) {
        PyErr_Format(PyExc_TypeError, "texts() argument 2 must be callable, not %.200s", Py_TYPE(fixed_of)->tp_name);
        return NULL;
    }
    double offset;
    if (cf_as_double(args[2], "offset", &offset) < 0)
        return NULL;
    /* A tuple of the records: fixed_of runs Python code, which must not pull items from under us. */
    PyObject *records = PySequence_Tuple(args[0]);
    if (records == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(records);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(records);
        return NULL;
    }
    Shaped cache[SHAPES];
    int count = 0, next = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = record_text(PyTuple_GET_ITEM(records, i), cache, &count, &next, fixed_of, offset);
        if (text == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, text);
    }
    for (int i = 0; i < count; i++) {
        Py_DECREF(cache[i].shape);
        Py_DECREF(cache[i].entry);
    }
    Py_DECREF(records);
    return out;
}
