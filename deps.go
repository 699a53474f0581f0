//go:build tools

package main

import (
	_ "github.com/getkin/kin-openapi/openapi3filter"
	_ "github.com/go-resty/resty/v2"
	_ "github.com/google/uuid"
	_ "github.com/gorilla/websocket"
	_ "github.com/kelseyhightower/envconfig"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/slack-go/slack/socketmode"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/ssh"
)
