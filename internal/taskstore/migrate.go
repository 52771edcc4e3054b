package taskstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// migrateEndpointsFile copies the created endpoints of an endpoints.json
// (id → public key, as earlier versions kept them) into s once and renames
// the file aside. Endpoints created then belong to the admin who made them.
func migrateEndpointsFile(s Store, path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read created endpoints: %w", err)
	}
	var f struct {
		Endpoints map[string]string `json:"endpoints"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, fmt.Errorf("created endpoints %s: %w", path, err)
	}
	now := time.Now().UTC()
	for id, key := range f.Endpoints {
		if err := s.PutEndpoint(Endpoint{ID: id, PublicKey: key, CreatedAt: now}); err != nil {
			return 0, err
		}
	}
	return len(f.Endpoints), os.Rename(path, path+".migrated")
}
