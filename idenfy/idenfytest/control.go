package idenfytest

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

const controlPrefix = "/_sim/"

type (
	controlError struct {
		Error string `json:"error"`
	}
	clockAnswer struct {
		Now time.Time `json:"now"`
	}
	advanceRequest struct {
		Advance string `json:"advance"`
	}
)

// serveControl serves the /_sim/ control API, described in the package
// documentation. It needs no auth and ignores faults: it is the test's side.
func (s *Simulator) serveControl(w http.ResponseWriter, r *http.Request) {
	get, post := r.Method == http.MethodGet, r.Method == http.MethodPost
	allowed := "GET, POST"
	switch r.URL.Path {
	case "/_sim/outbox":
		if get {
			s.serveOutbox(w, r)
			return
		}
		allowed = "GET"
	case "/_sim/clock":
		switch {
		case get:
			writeJSON(w, http.StatusOK, clockAnswer{s.Now()})
			return
		case post:
			s.serveAdvance(w, r)
			return
		}
	case "/_sim/faults":
		switch {
		case get:
			writeJSON(w, http.StatusOK, s.faultsView())
			return
		case post:
			s.serveInjectFault(w, r)
			return
		}
	case "/_sim/stats":
		if get {
			writeJSON(w, http.StatusOK, s.Stats())
			return
		}
		allowed = "GET"
	default:
		writeJSON(w, http.StatusNotFound, controlError{"no such control endpoint; there are /_sim/outbox, /_sim/clock, /_sim/faults and /_sim/stats"})
		return
	}
	w.Header().Set("Allow", allowed)
	writeJSON(w, http.StatusMethodNotAllowed, controlError{"method " + r.Method + " not allowed; use " + allowed})
}

func (s *Simulator) serveOutbox(w http.ResponseWriter, r *http.Request) {
	phone := r.URL.Query().Get("phone_number")
	// A "+" typed into a URL, as people do with curl, decodes as a space.
	if rest, ok := strings.CutPrefix(phone, " "); ok {
		phone = "+" + rest
	}
	if phone == "" {
		writeJSON(w, http.StatusBadRequest, controlError{"query parameter phone_number is required"})
		return
	}
	writeJSON(w, http.StatusOK, s.Outbox(phone))
}

func (s *Simulator) serveAdvance(w http.ResponseWriter, r *http.Request) {
	var req advanceRequest
	if err := decodeControl(w, r, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, controlError{err.Error()})
		return
	}
	d, err := time.ParseDuration(req.Advance)
	if err != nil || d < 0 {
		writeJSON(w, http.StatusBadRequest, controlError{`advance must be a Go duration that is not negative, e.g. {"advance": "2m30s"}`})
		return
	}
	s.Advance(d)
	writeJSON(w, http.StatusOK, clockAnswer{s.Now()})
}

func (s *Simulator) serveInjectFault(w http.ResponseWriter, r *http.Request) {
	var f Fault
	if err := decodeControl(w, r, &f); err != nil {
		writeJSON(w, http.StatusBadRequest, controlError{err.Error()})
		return
	}
	if err := s.InjectFault(f); err != nil {
		writeJSON(w, http.StatusBadRequest, controlError{err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, s.faultsView())
}

// decodeControl decodes one JSON object into v, rejecting unknown members so
// that a typo does not silently do nothing.
func decodeControl(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodySize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New("body must be one JSON object: " + err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("body must be one JSON object: data after it")
	}
	return nil
}
