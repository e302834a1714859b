/* An evidence package's disk work in one call that lets go of the interpreter lock once.
 *
 * The WIM worker writes each batch's packages on a thread while its event loop runs the batch's SQL
 * (models/evidence.py, PackageBatch). Written in Python, a package is some thirty small system calls with
 * Python between them, and every one of them hands the interpreter lock back and forth with the event loop:
 * each SQL statement of the loop then waited for the writer's next Python step, and the loop's statements
 * took twice as long as without the writer (docs/performance.md, round 8). Here the same steps run in C with
 * the lock released for all of them, so the writer costs the loop two lock hand-overs per package.
 *
 * Optional, like the other native helpers: without a compiler the Python writer (`_write_plan`) runs, and
 * tests/test_evidence_io.py holds the two to the same files, bytes and errors.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILES 64

typedef struct {
    const char *tmp, *final, *line, *head_tmp, *head_path, *head;
    Py_ssize_t line_len, head_len;
    int chain_fd, n;
    const char *names[MAX_FILES];
    const char *data[MAX_FILES];
    Py_ssize_t lens[MAX_FILES];
    char path[4096];
    const char *failed;        /* the path the failed step was about */
} job_t;

static int write_all(int fd, const char *buf, Py_ssize_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, (size_t)len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        len -= w;
    }
    return 0;
}

static int write_file(const char *path, const char *data, Py_ssize_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        return -1;
    if (write_all(fd, data, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return close(fd);
}

/* Without the interpreter lock: the same steps, in the same order, as models/evidence.py `_write_plan`. */
static int run(job_t *j)
{
    j->failed = j->tmp;
    if (mkdir(j->tmp, 0777) < 0)
        return -1;
    size_t tlen = strlen(j->tmp);
    for (int i = 0; i < j->n; i++) {
        if (tlen + 1 + strlen(j->names[i]) + 1 > sizeof j->path) {
            errno = ENAMETOOLONG;
            j->failed = j->names[i];
            return -1;
        }
        snprintf(j->path, sizeof j->path, "%s/%s", j->tmp, j->names[i]);
        j->failed = j->path;
        char *slash = strrchr(j->path + tlen + 1, '/');
        if (slash != NULL) {            /* one level of folder inside the package (images/…) */
            *slash = '\0';
            if (mkdir(j->path, 0777) < 0 && errno != EEXIST)
                return -1;
            *slash = '/';
        }
        if (write_file(j->path, j->data[i], j->lens[i]) < 0)
            return -1;
    }
    j->failed = j->final;
    if (rename(j->tmp, j->final) < 0)
        return -2;                      /* the files are written but not in place: the caller removes them */
    if (j->line != NULL) {
        j->failed = "the evidence chain file";
        if (write_all(j->chain_fd, j->line, j->line_len) < 0)
            return -3;
    }
    if (j->head != NULL) {
        j->failed = j->head_tmp;
        if (write_file(j->head_tmp, j->head, j->head_len) < 0)
            return -3;
        j->failed = j->head_path;
        if (rename(j->head_tmp, j->head_path) < 0)
            return -3;
    }
    return 0;
}

static PyObject *py_write_package(PyObject *self, PyObject *args)
{
    job_t j;
    PyObject *files;
    memset(&j, 0, sizeof j);
    j.chain_fd = -1;
    if (!PyArg_ParseTuple(args, "ssO!iz#zzz#", &j.tmp, &j.final, &PyList_Type, &files, &j.chain_fd,
                          &j.line, &j.line_len, &j.head_tmp, &j.head_path, &j.head,
                          &j.head_len))
        return NULL;
    if ((j.head != NULL) != (j.head_tmp != NULL && j.head_path != NULL)) {
        PyErr_SetString(PyExc_ValueError, "the head needs its bytes, its temporary path and its path");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(files);
    if (n > MAX_FILES) {
        PyErr_Format(PyExc_ValueError, "a package of %zd files (at most %d)", n, MAX_FILES);
        return NULL;
    }
    j.n = (int)n;
    /* the list holds its tuples and they their str and bytes while the lock is released: the caller's plan
       owns the list and nothing else changes it meanwhile (the names are `_plan_package`'s own) */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(files, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(t, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(t, 1))) {
            PyErr_SetString(PyExc_TypeError, "files: a list of (relative path: str, data: bytes)");
            return NULL;
        }
        j.names[i] = PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 0));
        if (j.names[i] == NULL)
            return NULL;
        j.data[i] = PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 1));
        j.lens[i] = PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1));
    }
    int rc, e;
    Py_BEGIN_ALLOW_THREADS
    rc = run(&j);
    e = errno;
    Py_END_ALLOW_THREADS
    if (rc == 0)
        Py_RETURN_NONE;
    /* OSError(errno, strerror, path): the subclass Python's own calls raise (FileExistsError, …); the step
       is its `step` attribute: 1 files, 2 their rename into place, 3 the chain line or the head */
    PyObject *err = PyObject_CallFunction(PyExc_OSError, "iss", e, strerror(e), j.failed);
    if (err == NULL)
        return NULL;
    PyObject *step = PyLong_FromLong(rc == -1 ? 1 : rc == -2 ? 2 : 3);
    if (step == NULL || PyObject_SetAttrString(err, "step", step) < 0) {
        Py_XDECREF(step);
        Py_DECREF(err);
        return NULL;
    }
    Py_DECREF(step);
    PyErr_SetObject((PyObject *)Py_TYPE(err), err);
    Py_DECREF(err);
    return NULL;
}

static PyMethodDef methods[] = {
    {"write_package", py_write_package, METH_VARARGS,
     "write_package(tmp, final, files, chain_fd, chain_line, head_tmp, head_path, head)\n\n"
     "mkdir tmp; write files [(relative path, bytes)] into it; rename tmp -> final; append chain_line (or\n"
     "None) to chain_fd; write head to head_tmp and rename it to head_path (or all three None). The\n"
     "interpreter lock is released for all of it. Raises OSError (with .step: 1, 2, 3)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_evidence_io",
                                    "An evidence package's disk work without the interpreter lock.", -1, methods};

PyMODINIT_FUNC PyInit__evidence_io(void) { return PyModule_Create(&module); }
