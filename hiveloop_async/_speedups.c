/* The hot path of hiveloop_async in C: ActionScope's enter, exit and set_payload.
 *
 * Optional. hiveloop_async/_track.py holds the pure-Python ActionScope this mirrors line by
 * line, and uses it when this module is not built or HIVELOOP_ASYNC_PURE_PYTHON=1 is set.
 * Everything that is not the common case (a scope closed elsewhere, a scope left from
 * another context, an exception message, an internal error, the client's slow path) calls
 * back into the Python functions that _track.py hands to setup(), so the two
 * implementations share every rule that is not a plain field store.
 *
 * Entering does: read the current scope, take the next id, set the ContextVar, read the
 * monotonic clock, append the scope itself to the client's deque. Leaving does: read the
 * clock, reset the ContextVar by token, append again. No I/O, no formatting, no allocation
 * but the ContextVar token. The GIL is held throughout; nothing here releases it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <structmember.h>

enum { S_NEW = 0, S_OPEN = 1, S_CLOSED = 2 };
enum { AWAIT_NONE = 0, AWAIT_ENTER = 1, AWAIT_EXIT = 2 };

/* A client's fast path: its deque, the client (for _put_slow), and the queue length from
 * which events take the slow path. The client writes wake_at; scopes read it. */
typedef struct {
    PyObject_HEAD
    PyObject *q;
    PyObject *client;
    Py_ssize_t wake_at;
} Route;

static PyTypeObject RouteType;

typedef struct {
    PyObject_HEAD
    PyObject *agent;
    PyObject *route;    /* agent._route, read once when the scope is created (or entered) */
    PyObject *name;
    PyObject *function;
    PyObject *payload;
    PyObject *parent;   /* enclosing ActionScope, or NULL */
    PyObject *task;     /* enclosing Task, or NULL */
    PyObject *token;    /* contextvars.Token while open */
    PyObject *exc_type; /* set on exit when an exception left the block */
    PyObject *exc_msg;
    unsigned long long action_id;
    long long t0;
    long long t1;
    int state;
    char sent;          /* set by the sender once it encoded action_started */
    char await_pending; /* which result the scope's own awaitable gives (async with) */
    char recorded;      /* entry got as far as the ContextVar: exit records the closing event */
} Scope;

static PyTypeObject ScopeType;

/* Set once by setup(); borrowed for the life of the process. */
static PyObject *g_var;             /* hiveloop_async._context.current_scope */
static PyObject *g_usage_error;     /* HiveLoopUsageError */
static PyObject *g_internal_error;  /* internal_error(where, exc) */
static PyObject *g_exception_message;
static PyObject *g_live_scope;
static PyObject *g_restore_foreign;
static PyObject *g_format_id;

static PyObject *s_client, *s_q, *s_wake_at, *s_put_slow, *s_route, *s_state;
static PyObject *g_deque_append; /* collections.deque.append, called without a lookup */
static PyObject *s_where_enter, *s_where_exit;

/* The process-wide id counter. Task ids come from here too (through next_id()), so actions
 * and tasks never share an id. The GIL makes the increment atomic. */
static unsigned long long g_counter;

static inline long long
mono_ns(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t t;
    (void)PyTime_MonotonicRaw(&t);
    return (long long)t;
#else
    /* The clock behind time.monotonic_ns(); never fails once the interpreter runs. */
    return (long long)_PyTime_GetMonotonicClock();
#endif
}

/* 1 if ``o`` (a scope or a task) has closed, 0 if not, -1 with an exception set. */
static int
is_closed(PyObject *o)
{
    if (Py_IS_TYPE(o, &ScopeType)) {
        return ((Scope *)o)->state == S_CLOSED;
    }
    PyObject *st = PyObject_GetAttr(o, s_state);
    if (st == NULL) {
        return -1;
    }
    long v = PyLong_AsLong(st);
    Py_DECREF(st);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    return v == S_CLOSED;
}

/* An ``Exception`` raised inside the SDK goes to internal_error() and is swallowed; any
 * other BaseException (KeyboardInterrupt raised by a signal handler during a callback)
 * keeps propagating. Returns 0 when swallowed, -1 when the error stays set. */
static int
swallow(PyObject *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return -1;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL && tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *r = PyObject_CallFunctionObjArgs(
        g_internal_error, where, value != NULL ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

/* Append the scope to its client's queue: ``q.append(self)`` while the queue is below the
 * route's threshold, else ``client._put_slow(self)`` (start, wake, overflow, capture...). */
static int
put_generic(Scope *self, PyObject *route)
{
    /* Any object with the route's attributes (tests replace routes to inject faults). */
    PyObject *q = NULL, *wake = NULL, *client = NULL, *r = NULL;
    if ((q = PyObject_GetAttr(route, s_q)) == NULL ||
        (wake = PyObject_GetAttr(route, s_wake_at)) == NULL) {
        goto done;
    }
    Py_ssize_t at = PyLong_AsSsize_t(wake);
    if (at == -1 && PyErr_Occurred()) {
        goto done;
    }
    Py_ssize_t n = PyObject_Size(q);
    if (n < 0) {
        goto done;
    }
    if (n < at) {
        r = PyObject_CallMethod(q, "append", "O", (PyObject *)self);
    }
    else if ((client = PyObject_GetAttr(route, s_client)) != NULL) {
        r = PyObject_CallMethodOneArg(client, s_put_slow, (PyObject *)self);
    }
done:
    Py_XDECREF(q);
    Py_XDECREF(wake);
    Py_XDECREF(client);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
put(Scope *self)
{
    PyObject *route = self->route;
    if (route == NULL) {
        if ((route = PyObject_GetAttr(self->agent, s_route)) == NULL) {
            return -1;
        }
        self->route = route;
    }
    if (!Py_IS_TYPE(route, &RouteType)) {
        return put_generic(self, route);
    }
    Route *rt = (Route *)route;
    Py_ssize_t n = PyObject_Size(rt->q);
    if (n < 0) {
        return -1;
    }
    PyObject *r;
    if (n < rt->wake_at) {
        PyObject *args[2] = {rt->q, (PyObject *)self};
        r = PyObject_Vectorcall(g_deque_append, args, 2, NULL);
    }
    else {
        r = PyObject_CallMethodOneArg(rt->client, s_put_slow, (PyObject *)self);
    }
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* -- enter and exit ----------------------------------------------------------------------- */

static int
do_enter(Scope *self)
{
    PyObject *cur = NULL;
    if (PyContextVar_Get(g_var, NULL, &cur) < 0) {
        return -1;
    }
    if (cur != NULL && cur != Py_None) {
        int closed = is_closed(cur);
        if (closed < 0) {
            Py_DECREF(cur);
            return -1;
        }
        if (closed) { /* closed elsewhere (another thread, out of order) */
            PyObject *live = PyObject_CallOneArg(g_live_scope, cur);
            Py_DECREF(cur);
            if (live == NULL) {
                return -1;
            }
            cur = live;
        }
    }
    if (cur == NULL || cur == Py_None) {
        Py_XDECREF(cur);
    }
    else if (Py_IS_TYPE(cur, &ScopeType)) {
        Py_XSETREF(self->parent, cur);
        Py_XINCREF(((Scope *)cur)->task);
        Py_XSETREF(self->task, ((Scope *)cur)->task);
    }
    else {
        Py_XSETREF(self->task, cur);
    }
    self->action_id = ++g_counter;
    PyObject *token = PyContextVar_Set(g_var, (PyObject *)self);
    if (token == NULL) {
        return -1;
    }
    Py_XSETREF(self->token, token);
    self->recorded = 1;
    self->t0 = mono_ns();
    return put(self);
}

static int
enter_checked(Scope *self)
{
    if (g_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hiveloop_async._speedups.setup() was not called");
        return -1;
    }
    if (self->state != S_NEW) {
        PyErr_Format(g_usage_error,
                     "track_context(%R) was already entered; use a new one per block",
                     self->name);
        return -1;
    }
    self->state = S_OPEN;
    if (do_enter(self) < 0 && swallow(s_where_enter) < 0) {
        return -1;
    }
    return 0;
}

static int
do_exit(Scope *self, long long t1, PyObject *exc_type, PyObject *exc)
{
    self->t1 = t1;
    if (exc_type != Py_None) {
        Py_INCREF(exc_type);
        Py_XSETREF(self->exc_type, exc_type);
        PyObject *msg = PyObject_CallOneArg(g_exception_message, exc);
        if (msg == NULL) {
            return -1;
        }
        Py_XSETREF(self->exc_msg, msg);
    }
    PyObject *token = self->token;
    if (token != NULL) {
        self->token = NULL; /* a kept Token holds 80 bytes and a GC-tracked object */
        if (PyContextVar_Reset(g_var, token) < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                Py_DECREF(token);
                return -1;
            }
            PyErr_Clear(); /* left from another context than it was entered in */
            PyObject *r = PyObject_CallFunctionObjArgs(
                g_restore_foreign, (PyObject *)self, token, NULL);
            Py_DECREF(token);
            if (r == NULL) {
                return -1;
            }
            Py_DECREF(r);
        }
        else {
            Py_DECREF(token);
            PyObject *prev = self->parent != NULL ? self->parent : self->task;
            if (prev != NULL) {
                int closed = is_closed(prev);
                if (closed < 0) {
                    return -1;
                }
                if (closed) { /* the enclosing scope ended first */
                    PyObject *live = PyObject_CallOneArg(g_live_scope, prev);
                    if (live == NULL) {
                        return -1;
                    }
                    PyObject *t = PyContextVar_Set(g_var, live);
                    Py_DECREF(live);
                    if (t == NULL) {
                        return -1;
                    }
                    Py_DECREF(t);
                }
            }
        }
    }
    return put(self);
}

static int
exit_checked(Scope *self, PyObject *exc_type, PyObject *exc)
{
    long long t1 = mono_ns();
    if (self->state != S_OPEN) {
        return 0;
    }
    self->state = S_CLOSED;
    if (!self->recorded) {
        return 0; /* entry failed early (an internal error, reported): nothing to close */
    }
    if (do_exit(self, t1, exc_type, exc) < 0 && swallow(s_where_exit) < 0) {
        return -1;
    }
    return 0;
}

static PyObject *
scope_enter(Scope *self, PyObject *Py_UNUSED(ignored))
{
    if (enter_checked(self) < 0) {
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
scope_exit(Scope *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (exit_checked(self, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ``async with``: __aenter__ and __aexit__ do their work at once and return the scope itself
 * as an awaitable that finishes without suspending (am_send), giving the scope or None.
 * Awaiting the scope outside that protocol is a TypeError, as for any object. */

static PyObject *
scope_aenter(Scope *self, PyObject *Py_UNUSED(ignored))
{
    if (enter_checked(self) < 0) {
        return NULL;
    }
    self->await_pending = AWAIT_ENTER;
    return Py_NewRef(self);
}

static PyObject *
scope_aexit(Scope *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__aexit__ expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    if (exit_checked(self, args[0], args[1]) < 0) {
        return NULL;
    }
    self->await_pending = AWAIT_EXIT;
    return Py_NewRef(self);
}

static PyObject *
scope_await(Scope *self)
{
    if (self->await_pending == AWAIT_NONE) {
        PyErr_SetString(PyExc_TypeError,
                        "object ActionScope can't be used in 'await' expression");
        return NULL;
    }
    return Py_NewRef(self);
}

static PySendResult
scope_am_send(Scope *self, PyObject *Py_UNUSED(arg), PyObject **result)
{
    int pending = self->await_pending;
    self->await_pending = AWAIT_NONE;
    *result = pending == AWAIT_ENTER ? Py_NewRef(self) : Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
scope_iternext(Scope *self)
{
    /* The same as am_send, for interpreters that step awaitables with next() (3.12+, or a
     * tracer installed on 3.11): the result travels in StopIteration. */
    int pending = self->await_pending;
    self->await_pending = AWAIT_NONE;
    if (pending == AWAIT_ENTER) {
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, (PyObject *)self);
        if (e != NULL) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
    }
    return NULL;
}

static PyObject *
scope_set_payload(Scope *self, PyObject *payload)
{
    if (self->state != S_CLOSED) {
        Py_INCREF(payload);
        Py_XSETREF(self->payload, payload);
    }
    Py_RETURN_NONE;
}

/* -- construction ------------------------------------------------------------------------- */

static PyObject *
scope_create(PyTypeObject *type, PyObject *agent, PyObject *name, PyObject *function)
{
    /* An agent without a route (not an Agent): looked up again on entry, where a failure is
     * an internal error like any other, not an exception from the constructor. */
    PyObject *route = PyObject_GetAttr(agent, s_route);
    if (route == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL;
        }
        PyErr_Clear();
    }
    Scope *self = PyObject_GC_New(Scope, type);
    if (self == NULL) {
        Py_XDECREF(route);
        return NULL;
    }
    self->agent = Py_NewRef(agent);
    self->route = route;
    self->name = Py_NewRef(name);
    self->function = function == Py_None ? NULL : Py_XNewRef(function);
    self->payload = NULL;
    self->parent = NULL;
    self->task = NULL;
    self->token = NULL;
    self->exc_type = NULL;
    self->exc_msg = NULL;
    self->action_id = 0;
    self->t0 = 0;
    self->t1 = 0;
    self->state = S_NEW;
    self->sent = 0;
    self->await_pending = AWAIT_NONE;
    self->recorded = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *
scope_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"agent", "name", "function", NULL};
    PyObject *agent, *name, *function = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:ActionScope", kwlist, &agent, &name,
                                     &function)) {
        return NULL;
    }
    return scope_create(type, agent, name, function);
}

static PyObject *
scope_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 2 || nargs == 3)) {
        return scope_create((PyTypeObject *)type, args[0], args[1],
                            nargs == 3 ? args[2] : Py_None);
    }
    /* Keywords or a wrong count: the general path parses and reports. */
    PyObject *tuple = PyTuple_New(nargs);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    }
    PyObject *kwds = NULL;
    if (kwnames != NULL) {
        kwds = PyDict_New();
        if (kwds == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (PyDict_SetItem(kwds, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                Py_DECREF(tuple);
                Py_DECREF(kwds);
                return NULL;
            }
        }
    }
    PyObject *r = scope_new((PyTypeObject *)type, tuple, kwds);
    Py_DECREF(tuple);
    Py_XDECREF(kwds);
    return r;
}

static int
scope_traverse(Scope *self, visitproc visit, void *arg)
{
    Py_VISIT(self->agent);
    Py_VISIT(self->route);
    Py_VISIT(self->name);
    Py_VISIT(self->function);
    Py_VISIT(self->payload);
    Py_VISIT(self->parent);
    Py_VISIT(self->task);
    Py_VISIT(self->token);
    Py_VISIT(self->exc_type);
    Py_VISIT(self->exc_msg);
    return 0;
}

static int
scope_clear(Scope *self)
{
    Py_CLEAR(self->agent);
    Py_CLEAR(self->route);
    Py_CLEAR(self->name);
    Py_CLEAR(self->function);
    Py_CLEAR(self->payload);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->task);
    Py_CLEAR(self->token);
    Py_CLEAR(self->exc_type);
    Py_CLEAR(self->exc_msg);
    return 0;
}

static void
scope_dealloc(Scope *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, scope_dealloc)
    scope_clear(self);
    PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

static PyObject *
scope_repr(Scope *self)
{
    static const char *names[] = {"new", "open", "closed"};
    return PyUnicode_FromFormat("<ActionScope %R %s>", self->name ? self->name : Py_None,
                                names[self->state]);
}

static PyObject *
scope_get_action_id_str(Scope *self, void *Py_UNUSED(closure))
{
    if (self->state == S_NEW) {
        Py_RETURN_NONE;
    }
    PyObject *id = PyLong_FromUnsignedLongLong(self->action_id);
    if (id == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(g_format_id, id);
    Py_DECREF(id);
    return r;
}

static PyMethodDef scope_methods[] = {
    {"__enter__", (PyCFunction)scope_enter, METH_NOARGS,
     "__enter__($self, /)\n--\n\nRecord action_started and make the action current."},
    {"__exit__", (PyCFunction)(void (*)(void))scope_exit, METH_FASTCALL,
     "__exit__($self, exc_type, exc, tb, /)\n--\n\n"
     "Record action_completed or action_failed; never swallows the exception."},
    {"__aenter__", (PyCFunction)scope_aenter, METH_NOARGS,
     "__aenter__($self, /)\n--\n\n"
     "As __enter__, returning an awaitable that never suspends. The scope is entered when\n"
     "__aenter__ is called (in ``async with``, right before the await)."},
    {"__aexit__", (PyCFunction)(void (*)(void))scope_aexit, METH_FASTCALL,
     "__aexit__($self, exc_type, exc, tb, /)\n--\n\n"
     "As __exit__, as an awaitable that never suspends."},
    {"set_payload", (PyCFunction)scope_set_payload, METH_O,
     "set_payload($self, payload, /)\n--\n\n"
     "Replace the data merged into the closing event. Never blocks or raises.\n\n"
     "The dict is read when the event is sent: do not change it after the block closes.\n"
     "Calls after the block has closed are ignored."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef scope_members[] = {
    {"agent", T_OBJECT, offsetof(Scope, agent), READONLY, NULL},
    {"name", T_OBJECT, offsetof(Scope, name), READONLY, NULL},
    {"function", T_OBJECT, offsetof(Scope, function), READONLY, NULL},
    {"payload", T_OBJECT, offsetof(Scope, payload), 0, NULL},
    {"parent", T_OBJECT, offsetof(Scope, parent), READONLY, NULL},
    {"task", T_OBJECT, offsetof(Scope, task), READONLY, NULL},
    {"_token", T_OBJECT, offsetof(Scope, token), READONLY, NULL},
    {"exc_type", T_OBJECT, offsetof(Scope, exc_type), READONLY, NULL},
    {"exc_msg", T_OBJECT, offsetof(Scope, exc_msg), READONLY, NULL},
    {"action_id", T_ULONGLONG, offsetof(Scope, action_id), READONLY, NULL},
    {"t0", T_LONGLONG, offsetof(Scope, t0), READONLY, NULL},
    {"t1", T_LONGLONG, offsetof(Scope, t1), READONLY, NULL},
    {"_state", T_INT, offsetof(Scope, state), READONLY, NULL},
    {"_sent", T_BOOL, offsetof(Scope, sent), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef scope_getset[] = {
    {"action_id_str", (getter)scope_get_action_id_str, NULL,
     "The action id as sent on the wire (a uuid4 string), or None before entry.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyAsyncMethods scope_as_async = {
    .am_await = (unaryfunc)scope_await,
    .am_send = (sendfunc)scope_am_send,
};

static PyTypeObject ScopeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hiveloop_async.ActionScope",
    .tp_basicsize = sizeof(Scope),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = scope_new,
    .tp_vectorcall = scope_vectorcall,
    .tp_dealloc = (destructor)scope_dealloc,
    .tp_traverse = (traverseproc)scope_traverse,
    .tp_clear = (inquiry)scope_clear,
    .tp_repr = (reprfunc)scope_repr,
    .tp_iter = PyObject_SelfIter, /* `yield from` (asyncio on 3.10/3.11) needs an iterator */
    .tp_iternext = (iternextfunc)scope_iternext,
    .tp_as_async = &scope_as_async,
    .tp_methods = scope_methods,
    .tp_members = scope_members,
    .tp_getset = scope_getset,
    /* tp_doc is set from the Python class's docstring by setup(). */
};

/* -- Route --------------------------------------------------------------------------------- */

static PyObject *
route_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"q", "client", NULL};
    PyObject *q, *client;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Route", kwlist, &q, &client)) {
        return NULL;
    }
    Route *self = PyObject_GC_New(Route, type);
    if (self == NULL) {
        return NULL;
    }
    self->q = Py_NewRef(q);
    self->client = Py_NewRef(client);
    self->wake_at = 0;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
route_traverse(Route *self, visitproc visit, void *arg)
{
    Py_VISIT(self->q);
    Py_VISIT(self->client);
    return 0;
}

static int
route_clear(Route *self)
{
    Py_CLEAR(self->q);
    Py_CLEAR(self->client);
    return 0;
}

static void
route_dealloc(Route *self)
{
    PyObject_GC_UnTrack(self);
    route_clear(self);
    PyObject_GC_Del(self);
}

static PyMemberDef route_members[] = {
    {"q", T_OBJECT, offsetof(Route, q), READONLY, NULL},
    {"client", T_OBJECT, offsetof(Route, client), READONLY, NULL},
    {"wake_at", T_PYSSIZET, offsetof(Route, wake_at), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "hiveloop_async._speedups.Route",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Route(q, client)\n--\n\n"
              "A client's fast path: its queue, the client, and the slow-path threshold.",
    .tp_new = route_new,
    .tp_dealloc = (destructor)route_dealloc,
    .tp_traverse = (traverseproc)route_traverse,
    .tp_clear = (inquiry)route_clear,
    .tp_members = route_members,
};

/* -- Agent.track_context as a C method descriptor ------------------------------------------ */

static PyObject *
agent_track_context(PyObject *agent, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    PyObject *name = NULL;
    if (kwnames == NULL && nargs == 1) {
        name = args[0];
    }
    else if (nargs == 0 && kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1 &&
             PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) &&
             PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "action_name") == 0) {
        name = args[0];
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "track_context() takes exactly one argument, action_name");
        return NULL;
    }
    return scope_create(&ScopeType, agent, name, Py_None);
}

static PyMethodDef track_context_def = {
    "track_context", (PyCFunction)(void (*)(void))agent_track_context,
    METH_FASTCALL | METH_KEYWORDS,
    "track_context($self, /, action_name)\n--\n\n"
    "Return a scope that tracks one block as ``with`` or ``async with``.\n\n"
    "See :class:`ActionScope`. Creating it records nothing; entering does. Never blocks or\n"
    "raises.",
};

/* -- the sender's encoder for scope records ------------------------------------------------ */

/* Set by setup_encoder(): orjson.dumps, its default= and option= values, and the largest
 * payload JSON written here (bigger ones take the Python path, which measures them the way
 * the server does and shrinks them if needed). */
static PyObject *g_dumps, *g_dumps_default, *g_dumps_option, *g_dumps_kwnames;
static Py_ssize_t g_payload_max;
static PyObject *s_action_name, *s_function, *s_summary;

typedef struct {
    char *p;
    Py_ssize_t len, cap;
    char stack[1024];
} Buf;

static int
buf_reserve(Buf *b, Py_ssize_t extra)
{
    if (b->len + extra <= b->cap) {
        return 0;
    }
    Py_ssize_t cap = (b->len + extra) * 2;
    char *p = b->p == b->stack ? PyMem_Malloc(cap) : PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (b->p == b->stack) {
        memcpy(p, b->stack, b->len);
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static int
buf_add(Buf *b, const char *s, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0) {
        return -1;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return 0;
}

#define BUF_LIT(b, lit) buf_add((b), (lit), (Py_ssize_t)sizeof(lit) - 1)

static void
buf_free(Buf *b)
{
    if (b->p != b->stack) {
        PyMem_Free(b->p);
    }
}

static const char HEX[] = "0123456789abcdef";

/* ``prefix`` + the low 48 bits of ``n`` as 12 hex digits: format_id() in C. */
static int
buf_id(Buf *b, const char *prefix, Py_ssize_t plen, unsigned long long n)
{
    if (buf_reserve(b, plen + 12) < 0) {
        return -1;
    }
    memcpy(b->p + b->len, prefix, plen);
    char *d = b->p + b->len + plen;
    for (int i = 11; i >= 0; i--) {
        d[i] = HEX[n & 15];
        n >>= 4;
    }
    b->len += plen + 12;
    return 0;
}

/* A str as a JSON string literal, byte for byte what orjson writes. -1 with an exception
 * set when the str cannot be encoded as UTF-8 (lone surrogates): the caller falls back. */
static int
buf_jstr(Buf *b, PyObject *str)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(str, &n);
    if (s == NULL || buf_reserve(b, n * 6 + 2) < 0) {
        return -1;
    }
    char *d = b->p + b->len;
    *d++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *d++ = (char)c;
            continue;
        }
        *d++ = '\\';
        switch (c) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '\b': *d++ = 'b'; break;
        case '\t': *d++ = 't'; break;
        case '\n': *d++ = 'n'; break;
        case '\f': *d++ = 'f'; break;
        case '\r': *d++ = 'r'; break;
        default:
            *d++ = 'u';
            *d++ = '0';
            *d++ = '0';
            *d++ = HEX[c >> 4];
            *d++ = HEX[c & 15];
        }
    }
    *d++ = '"';
    b->len = d - b->p;
    return 0;
}

static int
buf_int(Buf *b, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v);
    return buf_add(b, tmp, n);
}

/* a // b for b > 0, as Python rounds: towards minus infinity. */
static inline long long
floor_div(long long a, long long b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" for wall-clock nanoseconds; the second is cached. */
static long long ts_sec = LLONG_MIN;
static char ts_text[32];
static int ts_len;

static int
buf_timestamp(Buf *b, long long wall_ns)
{
    long long ms = floor_div(wall_ns, 1000000);
    long long sec = floor_div(ms, 1000);
    int msp = (int)(ms - sec * 1000);
    if (sec != ts_sec) {
        time_t t = (time_t)sec;
        struct tm tm;
#ifdef _WIN32
        int failed = (long long)t != sec || gmtime_s(&tm, &t) != 0;
#else
        int failed = (long long)t != sec || gmtime_r(&t, &tm) == NULL;
#endif
        if (failed) {
            PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
            return -1;
        }
        ts_len = (int)strftime(ts_text, sizeof ts_text, "%Y-%m-%dT%H:%M:%S", &tm);
        if (ts_len == 0) {
            PyErr_SetString(PyExc_OverflowError, "timestamp out of range");
            return -1;
        }
        ts_sec = sec;
    }
    char tail[8] = {'.', (char)('0' + msp / 100), (char)('0' + msp / 10 % 10),
                    (char)('0' + msp % 10), 'Z'};
    if (buf_add(b, ts_text, ts_len) < 0) {
        return -1;
    }
    return buf_add(b, tail, 5);
}

/* encode_action(scope, ended, offset_ns, prefix, fields) -> bytes | None
 *
 * The wire JSON of a scope's action_started (ended false) or action_completed event, as
 * RecordEncoder._action writes it; None when this case is left to Python: a failed action,
 * a name or function that is not a str, a payload that is not None or a dict, a payload
 * sharing a key with the action's own ("action_name", "function") or having "summary", a
 * payload orjson cannot encode by itself, or a large one. */
static PyObject *
mod_encode_action(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !Py_IS_TYPE(args[0], &ScopeType) || !PyUnicode_Check(args[3]) ||
        !PyUnicode_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_action(scope, ended, offset_ns, prefix, fields)");
        return NULL;
    }
    if (g_dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup_encoder() was not called");
        return NULL;
    }
    Scope *sc = (Scope *)args[0];
    int ended = PyObject_IsTrue(args[1]);
    if (ended < 0) {
        return NULL;
    }
    long long offset = PyLong_AsLongLong(args[2]);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((ended && sc->exc_type != NULL) || !PyUnicode_CheckExact(sc->name) ||
        (sc->function != NULL && !PyUnicode_CheckExact(sc->function))) {
        Py_RETURN_NONE;
    }
    PyObject *extra = NULL; /* the user's payload as JSON bytes, when there is one */
    PyObject *payload = ended ? sc->payload : NULL;
    if (payload != NULL && payload != Py_None) {
        if (!PyDict_CheckExact(payload)) {
            Py_RETURN_NONE;
        }
        if (PyDict_GET_SIZE(payload) > 0) {
            int hit = PyDict_Contains(payload, s_action_name);
            if (hit == 0) {
                hit = PyDict_Contains(payload, s_function);
            }
            if (hit == 0) {
                hit = PyDict_Contains(payload, s_summary);
            }
            if (hit != 0) {
                if (hit < 0) {
                    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                        return NULL;
                    }
                    PyErr_Clear(); /* a key whose __eq__ fails: the Python path reports it */
                }
                Py_RETURN_NONE;
            }
            PyObject *call[4] = {NULL, payload, g_dumps_default, g_dumps_option};
            extra = PyObject_Vectorcall(g_dumps, call + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                        g_dumps_kwnames);
            if (extra == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_Exception)) {
                    return NULL;
                }
                PyErr_Clear(); /* odd values: json_safe() in Python */
                Py_RETURN_NONE;
            }
            if (!PyBytes_Check(extra) || PyBytes_GET_SIZE(extra) > g_payload_max ||
                PyBytes_GET_SIZE(extra) < 3) {
                Py_DECREF(extra);
                Py_RETURN_NONE;
            }
        }
    }

    Py_ssize_t plen, flen;
    const char *prefix = PyUnicode_AsUTF8AndSize(args[3], &plen);
    const char *fields = prefix ? PyUnicode_AsUTF8AndSize(args[4], &flen) : NULL;
    if (fields == NULL) {
        Py_XDECREF(extra);
        return NULL;
    }
    Buf b;
    b.p = b.stack;
    b.len = 0;
    b.cap = sizeof b.stack;
    int ok = BUF_LIT(&b, "{\"event_id\":\"") == 0 && buf_id(&b, prefix, plen, ++g_counter) == 0 &&
             BUF_LIT(&b, "\",\"timestamp\":\"") == 0 &&
             buf_timestamp(&b, (ended ? sc->t1 : sc->t0) + offset) == 0 &&
             (ended ? BUF_LIT(&b, "\",\"event_type\":\"action_completed\",\"severity\":\"info\",")
                    : BUF_LIT(&b, "\",\"event_type\":\"action_started\",\"severity\":\"info\",")) ==
                 0 &&
             buf_add(&b, fields, flen) == 0 && BUF_LIT(&b, "\"action_id\":\"") == 0 &&
             buf_id(&b, prefix, plen, sc->action_id) == 0;
    if (ok && sc->parent != NULL && Py_IS_TYPE(sc->parent, &ScopeType)) {
        ok = BUF_LIT(&b, "\",\"parent_action_id\":\"") == 0 &&
             buf_id(&b, prefix, plen, ((Scope *)sc->parent)->action_id) == 0;
    }
    if (ok && ended) {
        ok = BUF_LIT(&b, "\",\"status\":\"success\",\"duration_ms\":") == 0 &&
             buf_int(&b, floor_div(sc->t1 - sc->t0, 1000000)) == 0 && BUF_LIT(&b, ",") == 0;
    }
    else if (ok) {
        ok = BUF_LIT(&b, "\",") == 0;
    }
    ok = ok && BUF_LIT(&b, "\"payload\":") == 0;
    Py_ssize_t payload_start = b.len;
    ok = ok && BUF_LIT(&b, "{\"action_name\":") == 0 && buf_jstr(&b, sc->name) == 0;
    if (ok && sc->function != NULL) {
        ok = BUF_LIT(&b, ",\"function\":") == 0 && buf_jstr(&b, sc->function) == 0;
    }
    if (ok && extra != NULL) {
        ok = BUF_LIT(&b, ",") == 0 &&
             buf_add(&b, PyBytes_AS_STRING(extra) + 1, PyBytes_GET_SIZE(extra) - 1) == 0 &&
             BUF_LIT(&b, "}") == 0;
    }
    else if (ok) {
        ok = BUF_LIT(&b, "}}") == 0;
    }
    Py_XDECREF(extra);
    PyObject *r = NULL;
    if (ok && b.len - payload_start - 1 > g_payload_max) {
        r = Py_NewRef(Py_None); /* large: measured and maybe shrunk in Python */
    }
    else if (ok) {
        r = PyBytes_FromStringAndSize(b.p, b.len);
    }
    else if (PyErr_ExceptionMatches(PyExc_UnicodeError)) {
        PyErr_Clear(); /* a name with lone surrogates: Python's fallbacks handle it */
        r = Py_NewRef(Py_None);
    }
    buf_free(&b);
    return r;
}

static PyObject *
mod_setup_encoder(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *dumps, *dflt, *option;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "OOOn:setup_encoder", &dumps, &dflt, &option, &limit)) {
        return NULL;
    }
    /* Interned: orjson tells its keyword arguments apart by identity. */
    PyObject *kwnames = Py_BuildValue("(NN)", PyUnicode_InternFromString("default"),
                                      PyUnicode_InternFromString("option"));
    if (kwnames == NULL) {
        return NULL;
    }
    Py_XSETREF(g_dumps_kwnames, kwnames);
    Py_XSETREF(g_dumps, Py_NewRef(dumps));
    Py_XSETREF(g_dumps_default, Py_NewRef(dflt));
    Py_XSETREF(g_dumps_option, Py_NewRef(option));
    g_payload_max = limit;
    Py_RETURN_NONE;
}

/* -- module ------------------------------------------------------------------------------- */

static PyObject *
mod_setup(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *var, *usage, *internal, *excmsg, *live, *foreign, *fmt, *doc;
    if (!PyArg_ParseTuple(args, "OOOOOOOO:setup", &var, &usage, &internal, &excmsg, &live,
                          &foreign, &fmt, &doc)) {
        return NULL;
    }
    if (!PyContextVar_CheckExact(var)) {
        PyErr_SetString(PyExc_TypeError, "setup() needs the current_scope ContextVar");
        return NULL;
    }
    Py_XSETREF(g_var, Py_NewRef(var));
    Py_XSETREF(g_usage_error, Py_NewRef(usage));
    Py_XSETREF(g_internal_error, Py_NewRef(internal));
    Py_XSETREF(g_exception_message, Py_NewRef(excmsg));
    Py_XSETREF(g_live_scope, Py_NewRef(live));
    Py_XSETREF(g_restore_foreign, Py_NewRef(foreign));
    Py_XSETREF(g_format_id, Py_NewRef(fmt));
    if (doc != Py_None) {
        /* A static type cannot be given attributes from Python: set __doc__ here. */
        if (PyDict_SetItemString(ScopeType.tp_dict, "__doc__", doc) < 0) {
            return NULL;
        }
        PyType_Modified(&ScopeType);
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_next_id(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(++g_counter);
}

static PyObject *
mod_track_context_method(PyObject *Py_UNUSED(module), PyObject *cls)
{
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "track_context_method() needs a class");
        return NULL;
    }
    return PyDescr_NewMethod((PyTypeObject *)cls, &track_context_def);
}

static PyMethodDef module_methods[] = {
    {"setup", mod_setup, METH_VARARGS,
     "setup(current_scope, usage_error, internal_error, exception_message, live_scope, "
     "restore_foreign, format_id, doc, /)\n--\n\nWire the C scope to its Python helpers."},
    {"encode_action", (PyCFunction)(void (*)(void))mod_encode_action, METH_FASTCALL,
     "encode_action(scope, ended, offset_ns, prefix, fields, /)\n--\n\n"
     "The wire JSON of a scope's action_started or action_completed event, or None when\n"
     "the Python encoder must handle the case."},
    {"setup_encoder", mod_setup_encoder, METH_VARARGS,
     "setup_encoder(dumps, default, option, payload_max, /)\n--\n\n"
     "Give encode_action() orjson.dumps and its arguments."},
    {"next_id", mod_next_id, METH_NOARGS,
     "next_id()\n--\n\nThe next integer of the process-wide id counter."},
    {"track_context_method", mod_track_context_method, METH_O,
     "track_context_method(cls, /)\n--\n\n"
     "A method descriptor for ``cls.track_context`` that builds an ActionScope directly."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "hiveloop_async._speedups",
    .m_doc = "The optional C hot path of hiveloop_async (see _track.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *
intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&ScopeType) < 0 || PyType_Ready(&RouteType) < 0) {
        return NULL;
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return NULL;
    }
    PyObject *deque = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (deque == NULL) {
        return NULL;
    }
    g_deque_append = PyObject_GetAttrString(deque, "append");
    Py_DECREF(deque);
    if (g_deque_append == NULL) {
        return NULL;
    }
    if (!(s_client = intern("client")) || !(s_q = intern("q")) ||
        !(s_wake_at = intern("wake_at")) || !(s_put_slow = intern("_put_slow")) ||
        !(s_route = intern("_route")) || !(s_state = intern("_state")) ||
        !(s_action_name = intern("action_name")) ||
        !(s_function = intern("function")) || !(s_summary = intern("summary")) ||
        !(s_where_enter = intern("action enter")) || !(s_where_exit = intern("action exit"))) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "ActionScope", (PyObject *)&ScopeType) < 0 ||
        PyModule_AddObjectRef(m, "Route", (PyObject *)&RouteType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
