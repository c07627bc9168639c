% if name in errors:
<p class="field-error" data-testid="form-error" id="err-{{name}}">✗ {{errors[name]}}</p>
% end
