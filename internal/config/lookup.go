package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// decodeEnvironment fills spec, a pointer to a struct tagged the way
// envconfig.Process expects, by reading each variable through getenv. It
// returns one "VARIABLE: problem" line per variable that is missing or
// malformed, and the set of those variables.
//
// It exists instead of a call to envconfig.Process for three reasons:
// Process reads only the process environment (os.LookupEnv, which cannot be
// replaced), so tests running the bot in parallel with their own settings
// could not use it; Process stops at the first bad variable, where an operator
// needs to see them all; and its errors quote the offending value, which
// would print a malformed secret. What envconfig does offer is kept: the same
// tags (envconfig, default, required, desc) with the same meaning, the
// Decoder interface through which every field type parses and checks its own
// value, and Usagef for the settings table. A test checks that Process and
// this function fill the struct identically.
//
// The differences are deliberate: an empty value counts as unset (getenv
// cannot tell them apart), and surrounding whitespace is trimmed.
func decodeEnvironment(spec any, getenv func(string) string) (problems []string, failed map[string]bool) {
	return decodeVariables(spec, getenv, func(string) bool { return true })
}

// decodeVariables is decodeEnvironment for the variables wanted says yes to;
// the other fields keep their zero values.
func decodeVariables(spec any, getenv func(string) string, wanted func(key string) bool) (problems []string, failed map[string]bool) {
	failed = make(map[string]bool)
	structValue := reflect.ValueOf(spec).Elem()
	structType := structValue.Type()
	for i := range structType.NumField() {
		tags := structType.Field(i).Tag
		key := tags.Get("envconfig")
		if !wanted(key) {
			continue
		}
		value := strings.TrimSpace(getenv(key))
		if value == "" {
			value = tags.Get("default")
		}
		if value == "" {
			if required, _ := strconv.ParseBool(tags.Get("required")); required {
				problems = append(problems, fmt.Sprintf("%s: not set; set it to %s", key, tags.Get("desc")))
				failed[key] = true
			}
			continue
		}
		if err := decodeField(structValue.Field(i), value); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", key, err))
			failed[key] = true
		}
	}
	return problems, failed
}

// decodeField hands value to the field's envconfig.Decoder. Every settings
// field has one (a test walks them all), so there is no other path to get
// subtly different from envconfig's own.
func decodeField(field reflect.Value, value string) error {
	decoder, ok := field.Addr().Interface().(envconfig.Decoder)
	if !ok {
		panic(fmt.Sprintf("config: settings field of type %s has no Decode method", field.Type()))
	}
	return decoder.Decode(value)
}
