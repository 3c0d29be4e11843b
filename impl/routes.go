package impl

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// Routes registers the API's routes with the daemon's middleware applied to each route once, at
// registration, instead of per request: echo composes the chain given to Use anew for every
// request (a closure per middleware and request). A request that matches no route (404, 405,
// OPTIONS) goes through the same chain, composed per request as Use would, so every answer
// passes the same middleware in the same order as before. Routes implements api.EchoRouter;
// register every route before serving.
type Routes struct {
	e      *echo.Echo
	mws    []echo.MiddlewareFunc
	routes map[route]bool // written while registering, read-only once serving
}

// NewRoutes returns the router that registers e's routes behind mws (applied in order: mws[0]
// outermost, like e.Use(mws...)).
func NewRoutes(e *echo.Echo, mws ...echo.MiddlewareFunc) *Routes {
	r := &Routes{e: e, mws: mws, routes: map[route]bool{}}
	e.Use(r.unrouted)
	return r
}

// unrouted is the chain for requests that reach no registered route; a routed request's
// handler has it already.
func (r *Routes) unrouted(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if r.routes[route{c.Request().Method, c.Path()}] {
			return next(c)
		}
		return chain(next, r.mws)(c)
	}
}

func (r *Routes) add(method, path string, h echo.HandlerFunc, m []echo.MiddlewareFunc) *echo.Route {
	r.routes[route{method, path}] = true
	return r.e.Add(method, path, chain(chain(h, m), r.mws))
}

// chain applies mws to h, mws[0] outermost.
func chain(h echo.HandlerFunc, mws []echo.MiddlewareFunc) echo.HandlerFunc {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// CONNECT registers a route (api.EchoRouter).
func (r *Routes) CONNECT(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodConnect, path, h, m)
}

// DELETE registers a route (api.EchoRouter).
func (r *Routes) DELETE(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodDelete, path, h, m)
}

// GET registers a route (api.EchoRouter).
func (r *Routes) GET(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodGet, path, h, m)
}

// HEAD registers a route (api.EchoRouter).
func (r *Routes) HEAD(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodHead, path, h, m)
}

// OPTIONS registers a route (api.EchoRouter).
func (r *Routes) OPTIONS(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodOptions, path, h, m)
}

// PATCH registers a route (api.EchoRouter).
func (r *Routes) PATCH(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPatch, path, h, m)
}

// POST registers a route (api.EchoRouter).
func (r *Routes) POST(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPost, path, h, m)
}

// PUT registers a route (api.EchoRouter).
func (r *Routes) PUT(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodPut, path, h, m)
}

// TRACE registers a route (api.EchoRouter).
func (r *Routes) TRACE(path string, h echo.HandlerFunc, m ...echo.MiddlewareFunc) *echo.Route {
	return r.add(http.MethodTrace, path, h, m)
}
