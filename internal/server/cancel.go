package server

import (
	"errors"
	"net/http"

	"github.com/vncfleet/vncfleet/internal/store"
)

// cancelManifest stops a manifest's owed work (store.CancelManifest). It answers at
// once; inFlight > 0 says calls are still being made, and calling again once they are
// done drops what their results left owed.
func (s *Server) cancelManifest(w http.ResponseWriter, r *http.Request) {
	id, ok := s.manifestID(w, r)
	if !ok {
		return
	}
	res, err := s.cfg.Store.CancelManifest(r.Context(), id, caller(r).Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, store.ErrStillApplying):
		writeError(w, http.StatusConflict, err.Error(), nil)
	case err != nil:
		s.internalError(w, r, err)
	default:
		s.cfg.Logger.Info("manifest cancelled", "manifest", id, "cancelled", res.Cancelled, "inFlight", res.InFlight, "by", caller(r).Name)
		writeJSON(w, http.StatusOK, res)
	}
}
