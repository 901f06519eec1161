package server

import (
	"net/http"
	"strconv"
)

// deadWebhooksListed bounds the dead events the overview lists.
const deadWebhooksListed = 200

func (s *Server) webhooks(w http.ResponseWriter, r *http.Request) {
	o, err := s.cfg.Store.Webhooks(r.Context(), deadWebhooksListed)
	if !s.found(w, r, err) {
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (s *Server) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, "event id must be a positive number", nil)
		return
	}
	ok, err := s.cfg.Store.RedeliverWebhook(r.Context(), id)
	if !s.found(w, r, err) {
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no dead webhook event "+strconv.FormatInt(id, 10), nil)
		return
	}
	s.cfg.Logger.Info("webhook event redelivered", "event", id, "by", caller(r).Name)
	writeJSON(w, http.StatusOK, map[string]any{"redelivered": id})
}
