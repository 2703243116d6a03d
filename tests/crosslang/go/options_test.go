package conformance

// The message rules of messages.proto, declared as custom options
// (options.proto; docs/wire-format.md section 14.2), read from the generated
// Go descriptors as a Go reader applying the same checks would read them.

import (
	"fmt"
	"reflect"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"flwire.test/conformance/flwirev1"
)

// fieldRules lists "message.field:rule" for every rule of md's fields.
func fieldRules(prefix string, md protoreflect.MessageDescriptor) []string {
	var out []string
	fields := md.Fields()
	for j := 0; j < fields.Len(); j++ {
		fd := fields.Get(j)
		r := proto.GetExtension(fd.Options(), flwirev1.E_Field).(*flwirev1.FieldRules)
		if r.GetRequired() {
			out = append(out, fmt.Sprintf("%s.%s:required", prefix, fd.Name()))
		}
		if r.GetNonNegative() {
			out = append(out, fmt.Sprintf("%s.%s:non_negative", prefix, fd.Name()))
		}
	}
	return out
}

func TestMessageRules(t *testing.T) {
	env := (&flwirev1.Envelope{}).ProtoReflect().Descriptor()
	body := env.Oneofs().ByName("body").Fields()

	// Who sends what, and on which topic (docs/wire-format.md section 14.2,
	// ../../../shared/DESIGN.md section 2): server -> clients on the broadcast
	// topic; client results on the updates topic, registration and liveness on
	// the control topic; an application's own message types where their sender
	// says; an aggregator's partial sums (scale-out) on the server side's own
	// aggregates topic.
	wantRoutes := map[string]string{
		"client_update":       "TOPIC_UPDATES/ROLE_CLIENT",
		"global_update":       "TOPIC_BROADCAST/ROLE_SERVER",
		"client_registration": "TOPIC_CONTROL/ROLE_CLIENT",
		"heartbeat":           "TOPIC_CONTROL/ROLE_CLIENT",
		"training_start":      "TOPIC_BROADCAST/ROLE_SERVER",
		"evaluation_request":  "TOPIC_BROADCAST/ROLE_SERVER",
		"evaluation_result":   "TOPIC_UPDATES/ROLE_CLIENT",
		"shutdown":            "TOPIC_BROADCAST/ROLE_SERVER",
		"custom":              "TOPIC_ANY/ROLE_ANY",
		"partial_aggregate":   "TOPIC_AGGREGATES/ROLE_AGGREGATOR",
	}
	// Client ids are required, rounds and example counts are never negative,
	// and the weights of an update are required (an evaluation request's are
	// not: absent means the latest global weights).
	wantRules := []string{
		"envelope.message_id:required", "envelope.schema_version:required",
		"client_update.client_id:required", "client_update.round_id:non_negative",
		"client_update.weights:required", "client_update.num_examples:non_negative",
		"global_update.round_id:non_negative", "global_update.weights:required",
		"client_registration.client_id:required", "heartbeat.client_id:required",
		"training_start.round_id:non_negative", "evaluation_request.round_id:non_negative",
		"evaluation_result.client_id:required", "evaluation_result.round_id:non_negative",
		"evaluation_result.num_examples:non_negative", "custom.type:required",
		"partial_aggregate.round_id:non_negative", "partial_aggregate.aggregator_id:required",
		"partial_aggregate.sums:required",
	}

	routes := map[string]string{}
	rules := fieldRules("envelope", env)
	for i := 0; i < body.Len(); i++ {
		f := body.Get(i)
		md := f.Message()
		r := proto.GetExtension(md.Options(), flwirev1.E_Message).(*flwirev1.MessageRules)
		if r.GetTopic() == flwirev1.Topic_TOPIC_UNSPECIFIED ||
			r.GetSender() == flwirev1.Role_ROLE_UNSPECIFIED {
			t.Errorf("%s declares no topic or sender", md.FullName())
		}
		routes[string(f.Name())] = fmt.Sprintf("%s/%s", r.GetTopic(), r.GetSender())
		rules = append(rules, fieldRules(string(f.Name()), md)...)
	}
	if !reflect.DeepEqual(routes, wantRoutes) {
		t.Errorf("routes %v, want %v", routes, wantRoutes)
	}
	sort.Strings(rules)
	sort.Strings(wantRules)
	if !reflect.DeepEqual(rules, wantRules) {
		t.Errorf("field rules\n got %v\nwant %v", rules, wantRules)
	}
}
